"""What a customer reads: one table of templates, rendered per channel.

All wording lives in `TEMPLATES` below so it can be reviewed (and translated) in one
place; senders only ask for a rendering. Email gets a subject and a plain-text body;
SMS and push get one short line, cut to what the channel carries (160 characters for a
single SMS segment). A template that does not exist, or params that lack a field the
template needs, are permanent failures: retrying the same request cannot fix them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipelines.delivery.errors import PermanentDeliveryError

#: Longest short text per channel: one GSM-7 SMS segment; what a lock screen shows for push.
SHORT_LIMITS = {"SMS": 160, "PUSH": 240}
ELLIPSIS = "..."


@dataclass(frozen=True)
class Template:
    """One message in its email form (subject, body) and its short form (SMS, push)."""

    subject: str
    body: str
    short: str


@dataclass(frozen=True)
class Rendered:
    """A rendered message: `subject` is None for channels without one."""

    subject: str | None
    text: str


TEMPLATES: dict[str, Template] = {
    "order_confirmed": Template(
        subject="Your order {order_id} is confirmed",
        body=(
            "Hello,\n"
            "\n"
            "thank you for your order {order_id}. We have reserved your items and\n"
            "taken payment of {total}; we will let you know when it ships.\n"
            "\n"
            "Customer number: {customer_id}\n"
            "\n"
            "-- Sluice Orders\n"
        ),
        short="Order {order_id} confirmed, total {total}. Thank you!",
    ),
    "order_rejected": Template(
        subject="Your order {order_id} could not be completed",
        body=(
            "Hello,\n"
            "\n"
            "we are sorry: your order {order_id} over {total} could not be completed.\n"
            "Reason: {reason}\n"
            "\n"
            "Nothing has been charged. Customer number: {customer_id}\n"
            "\n"
            "-- Sluice Orders\n"
        ),
        short="Order {order_id} ({total}) could not be completed: {reason}",
    ),
}


def render(template: str, params: Mapping[str, str], channel: str) -> Rendered:
    """The message `template` makes from `params` for `channel` (EMAIL, SMS or PUSH)."""
    found = TEMPLATES.get(template)
    if found is None:
        raise PermanentDeliveryError("unknown template", repr(template))
    if channel == "EMAIL":
        return Rendered(_fill(template, found.subject, params), _fill(template, found.body, params))
    limit = SHORT_LIMITS.get(channel)
    if limit is None:
        raise PermanentDeliveryError("unknown channel", repr(channel))
    return Rendered(None, shorten(_fill(template, found.short, params), limit))


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marked with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


def _fill(name: str, pattern: str, params: Mapping[str, str]) -> str:
    try:
        return pattern.format_map(params)
    except KeyError as exc:
        raise PermanentDeliveryError("missing template param", f"{name} needs {exc}") from None
