from __future__ import annotations

from collections import Counter

import pytest

from pipelines import domain
from producers.generator import INVALID_KINDS, GeneratorConfig, OrderGenerator


def _orders(n: int, **kw: object) -> list[dict]:
    gen = OrderGenerator(GeneratorConfig(**kw), clock=lambda: 1_700_000_000.0)  # type: ignore[arg-type]
    return [gen.make(i) for i in range(n)]


def test_same_seed_same_orders_ids_included() -> None:
    assert _orders(200, seed=7) == _orders(200, seed=7)
    assert _orders(50, seed=7) != _orders(50, seed=8)
    assert _orders(3, seed=7)[2]["order_id"] == "O-7-00000002"


def test_valid_orders_are_consistent() -> None:
    for order in _orders(500, invalid_fraction=0.0):
        assert order["lines"], order
        assert order["currency"] in domain.SUPPORTED_CURRENCIES
        skus = [ln["sku"] for ln in order["lines"]]
        assert len(skus) == len(set(skus))
        assert all(
            domain.sku_index(s) is not None and ln["quantity"] > 0
            for s, ln in zip(skus, order["lines"], strict=True)
        )
        assert order["total_cents"] == sum(
            ln["quantity"] * ln["unit_price_cents"] for ln in order["lines"]
        )
        assert order["placed_at"] == 1_700_000_000_000


def test_sku_popularity_is_skewed() -> None:
    counts = Counter(ln["sku"] for o in _orders(3000, invalid_fraction=0.0) for ln in o["lines"])
    top10 = sum(c for _, c in counts.most_common(10))
    assert top10 / sum(counts.values()) > 0.3
    assert len(counts) > 100  # the long tail still sells


def test_invalid_fraction_is_roughly_honoured() -> None:
    orders = _orders(4000, invalid_fraction=0.25)
    invalid = [o for o in orders if _invalid_kind(o) is not None]
    assert 0.2 < len(invalid) / len(orders) < 0.3
    assert {_invalid_kind(o) for o in invalid} == set(INVALID_KINDS)


def _invalid_kind(order: dict) -> str | None:
    if not order["lines"]:
        return "no_lines"
    if any(ln["quantity"] <= 0 for ln in order["lines"]):
        return "non_positive_quantity"
    if any(domain.sku_index(ln["sku"]) is None for ln in order["lines"]):
        return "unknown_sku"
    if order["currency"] not in domain.SUPPORTED_CURRENCIES:
        return "unsupported_currency"
    if order["total_cents"] != sum(
        ln["quantity"] * ln["unit_price_cents"] for ln in order["lines"]
    ):
        return "total_mismatch"
    return None


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid_fraction"):
        GeneratorConfig(invalid_fraction=1.5)
