from __future__ import annotations

from pipelines.stages import stock


def _req(action: str, qty: int = 2, order: str = "O-1", line: int = 0) -> dict:
    return {
        "order_id": order,
        "sku": "SKU-00001",
        "quantity": qty,
        "line_index": line,
        "line_count": 1,
        "action": action,
        "requested_at": 1,
    }


def _apply(table: dict, request: dict, offset: int) -> stock.StockStep:
    step = stock.handle(
        request,
        table.get(stock.stock_key("SKU-00001")),
        table.get(stock.request_key(request)),
        offset=offset,
        now_ms=offset,
    )
    for key, value in step.writes:
        table[key] = value
    return step


def test_restock_reserve_release() -> None:
    table: dict = {}
    assert _apply(table, _req("RESTOCK", 10, "restock-a"), 1).result is None
    step = _apply(table, _req("RESERVE", 4), 2)
    assert step.result is not None
    assert (step.result["ok"], step.result["available"]) == (True, 6)
    _apply(table, _req("RELEASE", 4), 3)
    assert table["stock:SKU-00001"]["available"] == 10


def test_insufficient_and_unknown() -> None:
    table: dict = {}
    unknown = _apply(table, _req("RESERVE"), 1).result
    assert unknown is not None
    assert unknown["outcome"] == "UNKNOWN_SKU"
    _apply(table, _req("RESTOCK", 1, "restock-a"), 2)
    short = _apply(table, _req("RESERVE", 2, "O-2"), 3).result
    assert short is not None
    assert (short["ok"], short["outcome"], short["available"]) == (False, "INSUFFICIENT_STOCK", 1)


def test_a_request_seen_again_is_answered_the_same_and_applied_once() -> None:
    table: dict = {}
    _apply(table, _req("RESTOCK", 5, "restock-a"), 1)
    first = _apply(table, _req("RESERVE", 3), 2)
    again = _apply(table, _req("RESERVE", 3), 2)
    assert again.replayed
    assert again.result == first.result
    assert table["stock:SKU-00001"]["available"] == 2
    _apply(table, _req("RESTOCK", 5, "restock-a"), 9)  # the same restock batch again
    assert table["stock:SKU-00001"]["available"] == 2


def test_crash_between_decision_and_stock_write_is_repaired_on_replay() -> None:
    table: dict = {}
    _apply(table, _req("RESTOCK", 5, "restock-a"), 1)
    step = stock.handle(_req("RESERVE", 3), table["stock:SKU-00001"], None, offset=2, now_ms=2)
    decision_key, decision = step.writes[0]
    table[decision_key] = decision  # the stock write after it was lost in the crash
    assert table["stock:SKU-00001"]["available"] == 5
    replay = _apply(table, _req("RESERVE", 3), 2)
    assert replay.replayed
    assert table["stock:SKU-00001"] == {"available": 2, "offset": 2}


def test_non_positive_quantity_is_refused() -> None:
    table: dict = {}
    _apply(table, _req("RESTOCK", 5, "restock-a"), 1)
    result = _apply(table, _req("RESERVE", 0), 2).result
    assert result is not None
    assert result["outcome"] == "INVALID_QUANTITY"
    assert table["stock:SKU-00001"]["available"] == 5
