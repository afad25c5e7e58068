from __future__ import annotations

from collections import Counter

import pytest

from pipelines import domain, rules
from producers.generator import GeneratorConfig, OrderGenerator

ORDER = {
    "order_id": "O-1-1",
    "customer_id": "C-000001",
    "currency": "EUR",
    "placed_at": 1,
    "lines": [
        {"sku": "SKU-00001", "quantity": 2, "unit_price_cents": 500},
        {"sku": "SKU-00002", "quantity": 1, "unit_price_cents": 250},
    ],
    "total_cents": 1250,
    "channel": "WEB",
    "client_ref": None,
}


def test_valid_order_passes() -> None:
    assert rules.validate(ORDER) == rules.Verdict(True)


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"lines": []}, "no lines"),
        ({"currency": "JPY"}, "unsupported currency JPY"),
        ({"total_cents": 1}, "does not match"),
        ({"lines": [{**ORDER["lines"][0], "quantity": 0}]}, "line 0: quantity 0 is not positive"),
        (
            {"lines": [{**ORDER["lines"][0], "sku": "BOGUS"}], "total_cents": 1000},
            "unknown SKU BOGUS",
        ),
        ({"lines": [ORDER["lines"][0], ORDER["lines"][0]], "total_cents": 2000}, "appears twice"),
    ],
)
def test_each_rule_rejects_with_a_readable_detail(change: dict, detail: str) -> None:
    verdict = rules.validate({**ORDER, **change})
    assert not verdict.ok
    assert detail in verdict.detail


def test_payment_is_deterministic_and_near_the_decline_rate() -> None:
    gen = OrderGenerator(GeneratorConfig(seed=3, invalid_fraction=0.0))
    orders = [gen.make(n) for n in range(5000)]
    first = [rules.authorize(o, 0.05) for o in orders]
    assert first == [rules.authorize(o, 0.05) for o in orders]
    declined = sum(not v.ok for v in first) / len(first)
    assert 0.04 < declined < 0.12  # issuer declines plus limits


def test_over_the_limit_is_declined() -> None:
    limit = rules.customer_limit_cents("C-000001")
    big = {**ORDER, "total_cents": limit + 1}
    assert rules.authorize(big, 0.0) == rules.Verdict(
        False, f"total {limit + 1} exceeds the customer's limit {limit}"
    )
    assert rules.authorize(ORDER, 0.0).detail.startswith("pay-")


def test_zero_decline_rate_declines_nothing_within_limits() -> None:
    assert all(rules.authorize({**ORDER, "order_id": f"O-{i}"}, 0.0).ok for i in range(500))


def test_preferences_are_stable_and_spread() -> None:
    prefs = [rules.channels_for(domain.customer_code(i)) for i in range(2000)]
    assert prefs == [rules.channels_for(domain.customer_code(i)) for i in range(2000)]
    share = Counter(ch for p in prefs for ch in p)
    assert 0.85 < share["EMAIL"] / 2000 < 0.95
    assert 0.25 < share["SMS"] / 2000 < 0.35
    assert 0.45 < share["PUSH"] / 2000 < 0.55


def test_recipients_are_well_formed() -> None:
    assert rules.recipient("C-000042", "EMAIL") == "c-000042@example.com"
    assert rules.recipient("C-000042", "SMS").startswith("+1555")
    assert len(rules.recipient("C-000042", "SMS")) == 12


def test_money_formatting() -> None:
    assert rules.money(3998, "EUR") == "39.98 EUR"
    assert rules.money(-5, "USD") == "-0.05 USD"
