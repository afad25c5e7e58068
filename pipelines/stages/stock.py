"""Stock per SKU, owned by one partition, changed once per request however often it arrives.

The inventory table holds two kinds of keys, both in the SKU's partition of one
changelog: `stock:<sku>` (units available and the offset of the last request applied)
and `req:<order>:<line>:<action>` (the decision on one request). The decision is
written before the stock, into the same changelog partition, so after any crash the
restored table has the decision whenever it has the stock change. A request that
arrives again finds its decision and gets the same answer (and repairs the stock if
the crash fell between the two writes); it never takes stock twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Writes = list[tuple[str, dict[str, Any]]]


@dataclass
class StockStep:
    """Table writes (in order) and the result to send back, for one request."""

    writes: Writes = field(default_factory=list)
    result: dict[str, Any] | None = None
    replayed: bool = False


def stock_key(sku: str) -> str:
    return f"stock:{sku}"


def request_key(request: Mapping[str, Any]) -> str:
    return f"req:{request['order_id']}:{request['line_index']}:{request['action']}"


def handle(
    request: Mapping[str, Any],
    stock: Mapping[str, Any] | None,
    decided: Mapping[str, Any] | None,
    *,
    offset: int,
    now_ms: int,
) -> StockStep:
    """Apply one RESERVE, RELEASE or RESTOCK to a SKU's stock, exactly once."""
    if decided is not None:
        return _replay(request, stock, decided)
    ok, outcome, available = _decide(request, stock)
    record = {"ok": ok, "outcome": outcome, "available": available, "offset": offset, "at": now_ms}
    step = StockStep(writes=[(request_key(request), record)])
    if ok:
        step.writes.append((stock_key(request["sku"]), {"available": available, "offset": offset}))
    step.result = _result(request, record)
    return step


def _decide(request: Mapping[str, Any], stock: Mapping[str, Any] | None) -> tuple[bool, str, int]:
    action, quantity = request["action"], request["quantity"]
    have = int(stock["available"]) if stock is not None else 0
    if quantity <= 0:
        return False, "INVALID_QUANTITY", have
    if action == "RESTOCK":
        return True, "APPLIED", have + quantity
    if stock is None:
        return False, "UNKNOWN_SKU", 0
    if action == "RELEASE":
        return True, "APPLIED", have + quantity
    if have >= quantity:
        return True, "APPLIED", have - quantity
    return False, "INSUFFICIENT_STOCK", have


def _replay(
    request: Mapping[str, Any], stock: Mapping[str, Any] | None, decided: Mapping[str, Any]
) -> StockStep:
    step = StockStep(result=_result(request, decided), replayed=True)
    behind = stock is None or int(stock["offset"]) < int(decided["offset"])
    if decided["ok"] and behind:  # the crash fell between the decision and the stock write
        step.writes.append(
            (
                stock_key(request["sku"]),
                {"available": decided["available"], "offset": decided["offset"]},
            )
        )
    return step


def _result(request: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any] | None:
    if request["action"] == "RESTOCK":
        return None  # restocks answer nobody
    return {
        "order_id": request["order_id"],
        "sku": request["sku"],
        "line_index": request["line_index"],
        "line_count": request["line_count"],
        "quantity": request["quantity"],
        "action": request["action"],
        "ok": record["ok"],
        "outcome": record["outcome"],
        "available": record["available"],
        "decided_at": record["at"],
    }
