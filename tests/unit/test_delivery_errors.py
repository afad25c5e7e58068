"""Error classification: what each provider answer means for retrying, and Retry-After."""

from __future__ import annotations

from email.utils import formatdate

import aiosmtplib
import pytest

from pipelines.delivery import (
    DeliveryError,
    PermanentDeliveryError,
    RateLimitedError,
    TransientDeliveryError,
    for_http_status,
    for_smtp_code,
    parse_retry_after,
)
from pipelines.delivery.senders import mail_refused, session_failure
from pipelines.errors import SluiceError

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        (formatdate(NOW + 90, usegmt=True), 90.0),
        (formatdate(NOW - 90, usegmt=True), 0.0),
    ],
)
def test_retry_after_both_forms(header: str, seconds: float) -> None:
    assert parse_retry_after(header, now_s=NOW) == pytest.approx(seconds)


def test_retry_after_asctime_and_rfc850_dates_are_read() -> None:
    assert parse_retry_after("Sun Nov  6 08:49:37 1994", now_s=0) == pytest.approx(784111777)
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now_s=0) == pytest.approx(784111777)


@pytest.mark.parametrize("header", [None, "", "   ", "soon", "-5", "1.5e3x", "12 seconds"])
def test_unreadable_retry_after_is_none(header: str | None) -> None:
    assert parse_retry_after(header, now_s=NOW) is None


def test_retry_after_uses_the_wall_clock_by_default() -> None:
    got = parse_retry_after(formatdate(None, usegmt=True))
    assert got is not None
    assert 0 <= got <= 1


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_success(status: int) -> None:
    assert for_http_status(status) is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, PermanentDeliveryError),
        (401, PermanentDeliveryError),
        (403, PermanentDeliveryError),
        (404, PermanentDeliveryError),
        (422, PermanentDeliveryError),
        (500, TransientDeliveryError),
        (502, TransientDeliveryError),
        (503, TransientDeliveryError),
        (504, TransientDeliveryError),
        (302, TransientDeliveryError),
    ],
)
def test_http_status_classification(status: int, kind: type[DeliveryError]) -> None:
    error = for_http_status(status, "body")
    assert type(error) is kind
    assert error.reason == f"http {status}"
    assert error.retriable is (kind is TransientDeliveryError)
    assert error.retry_after_s is None


def test_429_is_rate_limited_and_carries_retry_after() -> None:
    error = for_http_status(429, "slow down", "30", now_s=NOW)
    assert isinstance(error, RateLimitedError)
    assert error.retriable
    assert error.retry_after_s == 30.0
    dated = for_http_status(429, "", formatdate(NOW + 12, usegmt=True), now_s=NOW)
    assert dated is not None
    assert dated.retry_after_s == pytest.approx(12.0)
    assert for_http_status(429, "", None) is not None


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (421, TransientDeliveryError),
        (450, TransientDeliveryError),
        (451, TransientDeliveryError),
        (452, TransientDeliveryError),
        (550, PermanentDeliveryError),
        (552, PermanentDeliveryError),
        (553, PermanentDeliveryError),
        (554, PermanentDeliveryError),
        (-1, TransientDeliveryError),
    ],
)
def test_smtp_code_classification(code: int, kind: type[DeliveryError]) -> None:
    error = for_smtp_code(code, "text")
    assert type(error) is kind
    assert error.reason == f"smtp {code}"


def test_errors_sit_under_the_sluice_root_with_a_short_reason() -> None:
    error = PermanentDeliveryError("x" * 500, "detail")
    assert isinstance(error, SluiceError)
    assert len(error.reason) == 200
    assert str(TransientDeliveryError("smtp 451", "try later")) == "smtp 451: try later"
    assert str(TransientDeliveryError("http timeout")) == "http timeout"
    assert issubclass(RateLimitedError, TransientDeliveryError)


def test_refused_recipient_is_classified_by_its_code() -> None:
    refused = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, "no such user", "x@example.com")]
    )
    error = mail_refused(refused)
    assert isinstance(error, PermanentDeliveryError)
    assert error.reason == "smtp 550"
    later = mail_refused(aiosmtplib.SMTPDataError(451, "try later"))
    assert isinstance(later, TransientDeliveryError)
    sender = mail_refused(aiosmtplib.SMTPSenderRefused(553, "bad sender", "a@b"))
    assert isinstance(sender, PermanentDeliveryError)
    assert mail_refused(aiosmtplib.SMTPServerDisconnected("gone")) is None


@pytest.mark.parametrize(
    ("exc", "kind", "reason"),
    [
        (aiosmtplib.SMTPConnectError("refused"), TransientDeliveryError, "smtp connection failed"),
        (
            aiosmtplib.SMTPServerDisconnected("gone"),
            TransientDeliveryError,
            "smtp connection failed",
        ),
        (aiosmtplib.SMTPReadTimeoutError("slow"), TransientDeliveryError, "smtp timeout"),
        (aiosmtplib.SMTPConnectTimeoutError("slow"), TransientDeliveryError, "smtp timeout"),
        (TimeoutError(), TransientDeliveryError, "smtp timeout"),
        (
            aiosmtplib.SMTPAuthenticationError(535, "bad creds"),
            TransientDeliveryError,
            "smtp session 535",
        ),
        (aiosmtplib.SMTPHeloError(501, "who?"), TransientDeliveryError, "smtp session 501"),
        (aiosmtplib.SMTPNotSupported("SMTPUTF8"), PermanentDeliveryError, "smtp unsupported"),
        (ConnectionResetError(), TransientDeliveryError, "smtp error"),
    ],
)
def test_session_failures_say_nothing_about_the_mail(
    exc: Exception, kind: type[DeliveryError], reason: str
) -> None:
    error = session_failure(exc)
    assert type(error) is kind
    assert error.reason == reason


def test_unexpected_exceptions_are_not_swallowed() -> None:
    assert session_failure(KeyError("bug")) is None
