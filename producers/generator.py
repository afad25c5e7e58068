"""Synthetic but realistic orders, the same sequence for the same seed.

SKU popularity is skewed (a Zipf-like curve: a few SKUs sell most, so stock runs out
where it would in a real shop), basket sizes and quantities vary, and a configurable
share of orders is schema-valid but business-invalid, one of five kinds the order stage
must reject. Order ids derive from the seed and position, so producing the same seed
twice produces the same orders: that is how tests make duplicates on purpose.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pipelines import domain

INVALID_KINDS = (
    "no_lines",
    "non_positive_quantity",
    "unknown_sku",
    "total_mismatch",
    "unsupported_currency",
)

_CURRENCIES = (("EUR", 50), ("USD", 30), ("GBP", 15), ("SEK", 5))
_CHANNELS = (("WEB", 55), ("MOBILE", 30), ("STORE", 10), ("PARTNER", 5))
_BASKET_SIZES = ((1, 45), (2, 25), (3, 15), (4, 10), (5, 5))
_QUANTITIES = ((1, 70), (2, 20), (3, 7), (5, 3))


@dataclass(frozen=True)
class GeneratorConfig:
    """What kind of traffic to make."""

    seed: int = 1
    customers: int = domain.DEFAULT_CUSTOMERS
    skus: int = domain.DEFAULT_SKUS
    invalid_fraction: float = 0.02
    zipf_s: float = 1.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.invalid_fraction <= 1.0:
            raise ValueError("invalid_fraction must be between 0 and 1")
        if self.customers < 1 or self.skus < 1:
            raise ValueError("customers and skus must be at least 1")


class OrderGenerator:
    """An endless, seeded stream of OrderPlaced records (dicts in the schema's shape)."""

    def __init__(self, config: GeneratorConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._clock = clock
        weights = [1.0 / (rank**config.zipf_s) for rank in range(1, config.skus + 1)]
        self._sku_cum = list(itertools.accumulate(weights))

    def order_id(self, n: int) -> str:
        """The id of the n-th order of this seed."""
        return f"O-{self.config.seed}-{n:08d}"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for n in itertools.count():
            yield self.make(n)

    def make(self, n: int) -> dict[str, Any]:
        """The n-th order; call in sequence (the RNG advances with each call)."""
        rng = self._rng
        order = {
            "order_id": self.order_id(n),
            "customer_id": domain.customer_code(rng.randrange(self.config.customers)),
            "lines": self._lines(),
            "currency": _pick(rng, _CURRENCIES),
            "total_cents": 0,
            "placed_at": int(self._clock() * 1000),
            "channel": _pick(rng, _CHANNELS),
            "client_ref": None,
        }
        order["total_cents"] = sum(ln["quantity"] * ln["unit_price_cents"] for ln in order["lines"])
        if rng.random() < self.config.invalid_fraction:
            _spoil(order, rng.choice(INVALID_KINDS), rng)
        return order

    def _lines(self) -> list[dict[str, Any]]:
        rng = self._rng
        size = min(_pick(rng, _BASKET_SIZES), self.config.skus)
        chosen: list[int] = []
        while len(chosen) < size:
            index = rng.choices(range(self.config.skus), cum_weights=self._sku_cum)[0]
            if index not in chosen:
                chosen.append(index)
        lines = []
        for index in chosen:
            sku = domain.sku_code(index)
            lines.append(
                {
                    "sku": sku,
                    "quantity": _pick(rng, _QUANTITIES),
                    "unit_price_cents": domain.unit_price_cents(sku),
                }
            )
        return lines


def _pick(rng: random.Random, table: tuple[tuple[Any, int], ...]) -> Any:
    values, weights = zip(*table, strict=True)
    return rng.choices(values, weights=weights)[0]


def _spoil(order: dict[str, Any], kind: str, rng: random.Random) -> None:
    """Make an order business-invalid in one specific way (it stays schema-valid)."""
    if kind == "no_lines":
        order["lines"] = []
        order["total_cents"] = 0
    elif kind == "non_positive_quantity":
        order["lines"][0]["quantity"] = rng.choice((0, -1))
        order["total_cents"] = sum(ln["quantity"] * ln["unit_price_cents"] for ln in order["lines"])
    elif kind == "unknown_sku":
        order["lines"][0]["sku"] = f"SKU-X{rng.randrange(10_000):04d}"
    elif kind == "total_mismatch":
        order["total_cents"] += rng.choice((-1, 1)) * rng.randrange(1, 500)
    else:
        order["currency"] = domain.UNSUPPORTED_CURRENCY
