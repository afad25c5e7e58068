"""A pure-Python reference for the order stage's rules, for stock that never runs out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from pipelines import domain, rules


def expected_outcomes(
    orders: Iterable[Mapping[str, Any]], decline_rate: float, skus: int = 200
) -> Counter[str]:
    """Outcome counts (CONFIRMED or the reject reason) the rules give each order."""
    counts: Counter[str] = Counter()
    for order in orders:
        if not rules.validate(order).ok or any(
            (domain.sku_index(ln["sku"]) or 0) >= skus for ln in order["lines"]
        ):
            counts["INVALID"] += 1
        elif not rules.authorize(order, decline_rate).ok:
            counts["PAYMENT_DECLINED"] += 1
        else:
            counts["CONFIRMED"] += 1
    return counts
