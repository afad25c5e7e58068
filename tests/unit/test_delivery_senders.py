"""Senders without a network: what they would send, what they refuse, how they are built."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from pipelines import delivery, providers
from pipelines.delivery import (
    IDEMPOTENCY_HEADER,
    NOTIFICATION_HEADER,
    DeliverySettings,
    HttpSender,
    HttpSettings,
    PermanentDeliveryError,
    Sender,
    SmtpSender,
    SmtpSettings,
    senders_for,
)
from pipelines.delivery.senders import checked_target, message_id, provider_id

PARAMS = {"order_id": "ord-1", "total": "39.98 EUR", "customer_id": "cust-1"}


def notification(channel: str = "EMAIL", **changes: Any) -> dict[str, Any]:
    recipient = {"EMAIL": "cust-1@example.com", "SMS": "+15550001111", "PUSH": "device-0a1b2c3d"}
    base = {
        "notification_id": f"ord-1:order_confirmed:{channel}",
        "order_id": "ord-1",
        "channel": channel,
        "recipient": recipient[channel],
        "template": "order_confirmed",
        "params": PARAMS,
        "attempt": 1,
        "not_before": 0,
        "created_at": 0,
        "last_error": None,
    }
    return {**base, **changes}


def test_public_api_is_pinned() -> None:
    assert sorted(delivery.__all__) == sorted(
        [
            "IDEMPOTENCY_HEADER",
            "NOTIFICATION_HEADER",
            "TEMPLATES",
            "DeliveryError",
            "DeliverySettings",
            "HttpSender",
            "HttpSettings",
            "PermanentDeliveryError",
            "RateLimitedError",
            "Rendered",
            "Sender",
            "SmtpSender",
            "SmtpSettings",
            "TokenBucket",
            "TransientDeliveryError",
            "delay_topic_for",
            "delay_topic_suffixes",
            "for_http_status",
            "for_smtp_code",
            "next_attempt",
            "parse_retry_after",
            "render",
            "senders_for",
            "worker_share",
        ]
    )
    assert sorted(providers.__all__) == sorted(
        [
            "HttpProvider",
            "HttpProviderConfig",
            "ProvidersConfig",
            "ProvidersError",
            "ProvidersHandle",
            "Receipt",
            "ReceiptLog",
            "SmtpProvider",
            "SmtpProviderConfig",
            "providers_in_thread",
            "run_providers",
        ]
    )
    for module in (delivery, providers):
        assert all(hasattr(module, name) for name in module.__all__)


def test_mail_carries_the_notification_id_twice() -> None:
    sender = SmtpSender("127.0.0.1", 1, from_address="orders@sluice.example")
    mail = sender.build(notification())
    assert mail[NOTIFICATION_HEADER] == "ord-1:order_confirmed:EMAIL"
    assert mail["Message-ID"] == "<ord-1=3Aorder_confirmed=3AEMAIL@sluice.example>"
    assert mail["To"] == "cust-1@example.com"
    assert mail["From"] == "orders@sluice.example"
    assert mail["Subject"] == "Your order ord-1 is confirmed"
    assert "39.98 EUR" in mail.get_content()


def test_line_breaks_in_params_cannot_forge_mail_headers() -> None:
    sender = SmtpSender("127.0.0.1", 1, from_address="orders@sluice.example")
    forged = {**PARAMS, "order_id": "ord-1\r\nBcc: victim@example.com"}
    with pytest.raises(PermanentDeliveryError, match="invalid mail header"):
        sender.build(notification(params=forged))


def test_message_ids_are_distinct_for_distinct_notification_ids() -> None:
    ids = ["a:b", "a=3Ab", "a.b", "a_b", "a-b", "a b", "ä"]
    made = {message_id(i, "x.example") for i in ids}
    assert len(made) == len(ids)
    assert message_id("plain-id_1", "x.example") == "<plain-id_1@x.example>"


def test_http_payload_and_rendering() -> None:
    sender = HttpSender("SMS", "http://127.0.0.1:1/sms")
    nid, payload = sender.payload(notification("SMS"))
    assert nid == "ord-1:order_confirmed:SMS"
    assert payload["recipient"] == "+15550001111"
    assert payload["text"] == "Order ord-1 confirmed, total 39.98 EUR. Thank you!"
    assert payload["channel"] == "SMS"
    json.dumps(payload)  # the body must be JSON as is


@pytest.mark.parametrize(
    ("channel", "recipient"),
    [
        ("EMAIL", "not-an-address"),
        ("EMAIL", "a@b@example.com"),
        ("EMAIL", "Mallory <m@example.com>"),
        ("EMAIL", "x@example.com\r\nBcc: victim@example.com"),
        ("EMAIL", "x@example.com\n"),
        ("SMS", "5550001111"),
        ("SMS", "+15550001111\n"),
        ("SMS", "+0555000111"),
        ("SMS", "+1 555 000 1111"),
        ("PUSH", "short"),
        ("PUSH", "has spaces in it"),
    ],
)
def test_invalid_recipients_fail_permanently(channel: str, recipient: str) -> None:
    with pytest.raises(PermanentDeliveryError, match="invalid recipient") as info:
        checked_target(notification(channel, recipient=recipient), channel)
    assert not info.value.retriable


def test_wrong_channel_and_bad_ids_fail_permanently() -> None:
    with pytest.raises(PermanentDeliveryError, match="wrong channel"):
        checked_target(notification("SMS"), "EMAIL")
    with pytest.raises(PermanentDeliveryError, match="invalid notification id"):
        checked_target(notification(notification_id="a\r\nX-Evil: 1"), "EMAIL")
    with pytest.raises(PermanentDeliveryError, match="invalid notification id"):
        checked_target(notification(notification_id="abc\n"), "EMAIL")
    with pytest.raises(PermanentDeliveryError, match="malformed notification"):
        checked_target({"channel": "EMAIL"}, "EMAIL")
    no_template = {k: v for k, v in notification("SMS").items() if k != "template"}
    with pytest.raises(PermanentDeliveryError, match="unknown template"):
        HttpSender("SMS", "http://127.0.0.1:1/sms").payload(no_template)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"id": "p-1"}', "p-1"),
        ('{"id": 42}', "42"),
        ('{"status": "ok"}', "nid"),
        ("not json", "nid"),
        ("[1, 2]", "nid"),
    ],
)
def test_provider_id_falls_back_to_the_notification_id(body: str, expected: str) -> None:
    assert provider_id(body, "nid") == expected


def test_http_sender_serves_sms_or_push_only() -> None:
    with pytest.raises(ValueError, match="SMS or PUSH"):
        HttpSender("EMAIL", "http://127.0.0.1:1/")


def test_default_settings_point_at_the_local_providers() -> None:
    settings = DeliverySettings()
    assert (settings.smtp.host, settings.smtp.port) == ("127.0.0.1", 8025)
    assert settings.smtp.from_address == "orders@sluice.example"
    assert settings.http.sms_url == "http://127.0.0.1:8026/sms"
    assert settings.http.push_url == "http://127.0.0.1:8026/push"
    assert settings.http.timeout_s == 5


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SmtpSettings(starttls=True, use_tls=True), "exclude each other"),
        (lambda: SmtpSettings(username="u"), "go together"),
        (lambda: HttpSettings(auth_header="Authorization"), "go together"),
        (lambda: HttpSettings(sms_url="ftp://x/sms"), "sms_url"),
        (lambda: HttpSettings(timeout_s=0), "timeout_s"),
        (lambda: DeliverySettings.model_validate({"smtpp": {}}), "smtpp"),
    ],
)
def test_settings_refuse_incoherent_values(build: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        build()


def test_settings_are_frozen_and_hide_secrets() -> None:
    settings = DeliverySettings(
        smtp=SmtpSettings(username="u", password=SecretStr("hunter2")),
        http=HttpSettings(auth_header="Authorization", auth_value=SecretStr("Bearer s3cret")),
    )
    assert "hunter2" not in repr(settings)
    assert "s3cret" not in repr(settings)
    with pytest.raises(ValidationError):
        settings.smtp.port = 25  # type: ignore[misc]


def test_settings_nest_from_plain_data() -> None:
    settings = DeliverySettings.model_validate({"smtp": {"port": 2525}, "http": {"timeout_s": 1.5}})
    assert settings.smtp.port == 2525
    assert settings.http.timeout_s == 1.5


def test_senders_for_gives_one_sender_per_channel() -> None:
    senders = senders_for(DeliverySettings())
    assert sorted(senders) == ["EMAIL", "PUSH", "SMS"]
    assert isinstance(senders["EMAIL"], SmtpSender)
    assert isinstance(senders["SMS"], HttpSender)
    assert isinstance(senders["PUSH"], HttpSender)
    for channel, sender in senders.items():
        assert sender.channel == channel
        assert isinstance(sender, Sender)


def test_http_sender_sends_the_idempotency_key_header_name() -> None:
    assert IDEMPOTENCY_HEADER == "Idempotency-Key"
