"""The shop's business rules: what makes an order valid, paid, and who hears about it.

Pure functions of the order and of ids, with no clock and no randomness outside a CRC of
the id, so the order stage, the reference computation in the tests and a user reading
this file all reach the same verdict for the same order.

Payment authorisation (documented for users, relied on by tests):

* every customer has a limit: 2,000 to 9,000 currency units, in steps of 1,000, chosen by
  CRC32("limit:" + customer_id); an order whose total exceeds it is declined;
* otherwise a configurable share of orders (`decline_rate`, default 3%) is declined by
  the "issuer", chosen by CRC32("pay:" + order_id) so the same order always gets the same
  answer, however often it is replayed.

Notification preferences: every customer has a fixed set of channels, derived from
CRC32("prefs:" + customer_id): email for 90% of customers, SMS for 30%, push for 50%.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines import domain

CHANNELS = ("EMAIL", "SMS", "PUSH")


@dataclass(frozen=True)
class Verdict:
    """A yes/no decision with the reason a human would want to read."""

    ok: bool
    detail: str = ""


def validate(order: Mapping[str, Any]) -> Verdict:
    """Business validation of a schema-valid order; the first rule broken is the verdict.

    Only the SKU code's format is checked here: whether a well-formed SKU exists is the
    inventory owner's call, made when its line is reserved.
    """
    lines = order["lines"]
    if not lines:
        return Verdict(False, "order has no lines")
    if order["currency"] not in domain.SUPPORTED_CURRENCIES:
        return Verdict(False, f"unsupported currency {order['currency']}")
    for index, line in enumerate(lines):
        problem = _line_problem(line, {ln["sku"] for ln in lines[:index]})
        if problem:
            return Verdict(False, f"line {index}: {problem}")
    expected = sum(ln["quantity"] * ln["unit_price_cents"] for ln in lines)
    if order["total_cents"] != expected:
        return Verdict(False, f"total {order['total_cents']} does not match lines ({expected})")
    return Verdict(True)


def _line_problem(line: Mapping[str, Any], earlier_skus: set[str]) -> str:
    if line["quantity"] <= 0:
        return f"quantity {line['quantity']} is not positive"
    if line["unit_price_cents"] < 0:
        return "negative unit price"
    if line["sku"] in earlier_skus:
        return f"SKU {line['sku']} appears twice"
    if domain.sku_index(line["sku"]) is None:
        return f"unknown SKU {line['sku']}"
    return ""


def customer_limit_cents(customer_id: str) -> int:
    """The most a customer may spend on one order, in minor units."""
    return (2 + domain.stable_hash("limit:" + customer_id) % 8) * 1000 * 100


def authorize(order: Mapping[str, Any], decline_rate: float) -> Verdict:
    """The payment decision for a valid order; `detail` is the payment id when approved."""
    limit = customer_limit_cents(order["customer_id"])
    if order["total_cents"] > limit:
        return Verdict(False, f"total {order['total_cents']} exceeds the customer's limit {limit}")
    if domain.stable_hash("pay:" + order["order_id"]) % 10_000 < round(decline_rate * 10_000):
        return Verdict(False, "declined by the issuer")
    return Verdict(True, f"pay-{domain.stable_hash('payid:' + order['order_id']):08x}")


def channels_for(customer_id: str) -> tuple[str, ...]:
    """The channels a customer opted into (possibly none)."""
    h = domain.stable_hash("prefs:" + customer_id)
    wanted = (h % 10 < 9, (h // 10) % 10 < 3, (h // 100) % 10 < 5)
    return tuple(ch for ch, yes in zip(CHANNELS, wanted, strict=True) if yes)


def recipient(customer_id: str, channel: str) -> str:
    """Where a customer is reached on a channel (synthetic but well-formed)."""
    h = domain.stable_hash("contact:" + customer_id)
    if channel == "EMAIL":
        return f"{customer_id.lower()}@example.com"
    if channel == "SMS":
        return f"+1555{h % 10_000_000:07d}"
    return f"device-{h:08x}"


def notification_id(order_id: str, template: str, channel: str) -> str:
    """The idempotency key of one notification: stable across every retry and replay."""
    return f"{order_id}:{template}:{channel}"


def money(cents: int, currency: str) -> str:
    """Minor units as a human amount, e.g. 3998 EUR -> '39.98 EUR'."""
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d} {currency}"
