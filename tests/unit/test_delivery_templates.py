"""Templates: every template renders on every channel, limits hold, mistakes are permanent."""

from __future__ import annotations

import pytest

from pipelines.delivery import TEMPLATES, PermanentDeliveryError, render
from pipelines.delivery.templates import SHORT_LIMITS, shorten

PARAMS = {
    "order_id": "ord-00042",
    "total": "39.98 EUR",
    "customer_id": "cust-7",
    "reason": "declined by the issuer",
}


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_email_has_subject_and_body_with_the_params(template: str) -> None:
    rendered = render(template, PARAMS, "EMAIL")
    assert rendered.subject is not None
    assert "ord-00042" in rendered.subject
    assert "39.98 EUR" in rendered.text
    assert "cust-7" in rendered.text
    assert "{" not in rendered.subject + rendered.text


def test_rejection_says_why() -> None:
    assert "declined by the issuer" in render("order_rejected", PARAMS, "EMAIL").text
    assert "declined by the issuer" in render("order_rejected", PARAMS, "SMS").text


@pytest.mark.parametrize("channel", ["SMS", "PUSH"])
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_short_channels_get_one_short_line(template: str, channel: str) -> None:
    rendered = render(template, PARAMS, channel)
    assert rendered.subject is None
    assert "ord-00042" in rendered.text
    assert "\n" not in rendered.text
    assert len(rendered.text) <= SHORT_LIMITS[channel]


def test_sms_is_cut_to_160_characters_with_a_mark() -> None:
    long_reason = "the warehouse could not reserve " + "very " * 60 + "rare items"
    text = render("order_rejected", {**PARAMS, "reason": long_reason}, "SMS").text
    assert len(text) == 160
    assert text.endswith("...")
    assert text.startswith("Order ord-00042")


def test_shorten_leaves_short_text_alone() -> None:
    assert shorten("hello", 5) == "hello"
    assert shorten("hello world", 8) == "hello..."


def test_unknown_template_is_permanent() -> None:
    with pytest.raises(PermanentDeliveryError, match="unknown template") as info:
        render("order_exploded", PARAMS, "EMAIL")
    assert info.value.retriable is False
    assert info.value.reason == "unknown template"


def test_missing_param_is_permanent_and_names_it() -> None:
    params = {k: v for k, v in PARAMS.items() if k != "total"}
    with pytest.raises(PermanentDeliveryError, match="'total'"):
        render("order_confirmed", params, "SMS")


def test_unknown_channel_is_permanent() -> None:
    with pytest.raises(PermanentDeliveryError, match="unknown channel"):
        render("order_confirmed", PARAMS, "FAX")


def test_params_are_values_not_format_directives() -> None:
    """A param containing braces is shown as is, never interpreted."""
    text = render("order_confirmed", {**PARAMS, "order_id": "{total}"}, "PUSH").text
    assert text.startswith("Order {total} confirmed")
