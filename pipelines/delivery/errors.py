"""Why a delivery failed, in the three kinds retry policy needs to tell apart.

A sender turns every provider answer (SMTP reply code, HTTP status, timeout, refused
connection) into one of these, so the notifications stage never looks at protocol
details: transient failures go to a delay topic, rate limits wait at least as long as
the provider asked, permanent ones go straight to the dead-letter queue. `reason` is a
short, stable phrase meant for `last_error`, DLQ headers and metrics labels.
"""

from __future__ import annotations

import time
from datetime import UTC
from email.utils import parsedate_to_datetime

from pipelines.errors import SluiceError

#: Longest `reason` kept: it travels in Kafka headers and metric labels.
MAX_REASON = 200


class DeliveryError(SluiceError):
    """A notification could not be handed to its provider this time."""

    retriable: bool = False

    def __init__(
        self,
        reason: str,
        detail: str | None = None,
        *,
        retry_after_s: float | None = None,
    ) -> None:
        self.reason = reason[:MAX_REASON]
        self.retry_after_s = retry_after_s
        super().__init__(f"{self.reason}: {detail}" if detail else self.reason)


class TransientDeliveryError(DeliveryError):
    """Worth retrying: timeouts, 5xx, refused connections, SMTP 4xx replies."""

    retriable = True


class RateLimitedError(TransientDeliveryError):
    """The provider said slow down (HTTP 429); retry no earlier than `retry_after_s`."""


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help: bad recipient, rejected request, unknown template."""

    retriable = False


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header, in either form RFC 9110 allows.

    Delta-seconds (`"120"`) and HTTP-dates (`"Wed, 21 Oct 2026 07:28:00 GMT"`) both work;
    a date in the past means 0. A header that is neither gives None, so callers fall back
    to their own backoff instead of failing on a provider's typo.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now_s is None else now_s
    return max(0.0, when.timestamp() - now)


def for_http_status(
    status: int, detail: str = "", retry_after: str | None = None, now_s: float | None = None
) -> DeliveryError | None:
    """The error an HTTP status means for delivery, or None for success (2xx).

    429 carries the provider's Retry-After; other 4xx are the request's fault and will
    fail the same way again; 5xx and anything unexpected (1xx, 3xx) may pass later.
    """
    if 200 <= status < 300:
        return None
    reason = f"http {status}"
    if status == 429:
        return RateLimitedError(reason, detail, retry_after_s=parse_retry_after(retry_after, now_s))
    if 400 <= status < 500:
        return PermanentDeliveryError(reason, detail)
    return TransientDeliveryError(reason, detail)


def for_smtp_code(code: int, detail: str = "") -> DeliveryError:
    """The error an SMTP reply code means: 4xx try again later, 5xx never.

    Codes outside 400-599 (a confused server, or aiosmtplib's -1 for "no reply") are
    treated as transient, since the message was not accepted and may be next time.
    """
    reason = f"smtp {code}"
    if 500 <= code < 600:
        return PermanentDeliveryError(reason, detail)
    return TransientDeliveryError(reason, detail)
