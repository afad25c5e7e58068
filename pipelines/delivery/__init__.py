"""Delivering notifications to providers: senders, templates, retry timing, rate limits.

Pure asyncio, no Kafka: the notifications stage wires these to its topics. Import from
here; the modules behind it are private and may move.
"""

from __future__ import annotations

from pipelines.delivery.backoff import delay_topic_for, delay_topic_suffixes, next_attempt
from pipelines.delivery.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RateLimitedError,
    TransientDeliveryError,
    for_http_status,
    for_smtp_code,
    parse_retry_after,
)
from pipelines.delivery.ratelimit import TokenBucket, worker_share
from pipelines.delivery.senders import (
    IDEMPOTENCY_HEADER,
    NOTIFICATION_HEADER,
    HttpSender,
    Sender,
    SmtpSender,
)
from pipelines.delivery.settings import (
    DeliverySettings,
    HttpSettings,
    SmtpSettings,
    senders_for,
)
from pipelines.delivery.templates import TEMPLATES, Rendered, render

__all__ = [
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
