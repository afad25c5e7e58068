"""The shop's reference data: SKUs, prices, currencies, customers.

Producers, the order stage and the tests all derive these from the same pure functions,
so a generated order, the stock it is checked against and a test's expected outcome
agree without sharing any state. Everything is a function of an index or an id (and a
CRC, never Python's salted `hash`), so any process computes the same values.
"""

from __future__ import annotations

import zlib

#: Currencies the shop accepts; anything else is rejected as INVALID.
SUPPORTED_CURRENCIES: frozenset[str] = frozenset({"EUR", "USD", "GBP", "SEK"})

#: A well-formed ISO 4217 code the shop does not accept (used for invalid test orders).
UNSUPPORTED_CURRENCY = "JPY"

DEFAULT_SKUS = 200
DEFAULT_CUSTOMERS = 1000


def stable_hash(text: str) -> int:
    """A 32-bit hash that is the same in every process and on every machine."""
    return zlib.crc32(text.encode())


def sku_code(index: int) -> str:
    """The code of the `index`-th SKU (0-based): SKU-00000, SKU-00001, ..."""
    return f"SKU-{index:05d}"


def sku_index(code: str) -> int | None:
    """The index of a SKU code, or None if it is not one of ours."""
    if not code.startswith("SKU-") or not code[4:].isdigit():
        return None
    return int(code[4:])


def unit_price_cents(sku: str) -> int:
    """The list price of a SKU, 1.99 to 199.99 in its currency's minor unit."""
    return 199 + (stable_hash(sku) % 19_800)


def initial_stock(sku: str) -> int:
    """Starting stock per SKU: popular (low-index) SKUs get more, a few start scarce."""
    index = sku_index(sku) or 0
    base = 400 if index < 20 else 120
    return base + stable_hash("stock:" + sku) % 80


def customer_code(index: int) -> str:
    """The id of the `index`-th synthetic customer."""
    return f"C-{index:06d}"
