"""The stock owner's decisions: once per request, each carrying the levels it set."""

from __future__ import annotations

from typing import Any

from pipelines.stages import stock

SKU = "SKU-00001"


def _req(
    action: str, qty: int = 2, order: str = "O-1", lines: list[tuple[int, str, int]] | None = None
) -> dict[str, Any]:
    return {
        "order_id": order,
        "action": action,
        "line_count": 3,
        "requested_at": 1,
        "lines": [
            {"line_index": i, "sku": sku, "quantity": q} for i, sku, q in (lines or [(0, SKU, qty)])
        ],
    }


class Owner:
    """The stock owner's state as the stage keeps it: a table of decisions and a book."""

    def __init__(self) -> None:
        self.table: dict[str, Any] = {}
        self.book = stock.StockBook()

    def apply(self, request: dict[str, Any], at: int = 1) -> stock.StockStep:
        step = stock.handle(
            request, self.book, self.table.get(stock.request_key(request)), now_ms=at
        )
        if step.decision is not None:
            self.table[step.key] = step.decision
        return step

    def restored(self) -> stock.StockBook:
        """The book a restarted worker rebuilds from the table alone."""
        book = stock.StockBook()
        book.rebuild(self.table.items())
        return book


def _line(step: stock.StockStep, n: int = 0) -> dict[str, Any]:
    assert step.result is not None
    return dict(step.result["lines"][n])


def test_restock_reserve_release() -> None:
    owner = Owner()
    assert owner.apply(_req("RESTOCK", 10, "restock-a")).result is None
    line = _line(owner.apply(_req("RESERVE", 4)))
    assert (line["ok"], line["available"]) == (True, 6)
    owner.apply(_req("RELEASE", 4))
    assert owner.book.available(SKU) == 10
    assert owner.restored().available(SKU) == 10


def test_insufficient_and_unknown() -> None:
    owner = Owner()
    assert _line(owner.apply(_req("RESERVE")))["outcome"] == "UNKNOWN_SKU"
    owner.apply(_req("RESTOCK", 1, "restock-a"))
    short = _line(owner.apply(_req("RESERVE", 2, "O-2")))
    assert (short["ok"], short["outcome"], short["available"]) == (False, "INSUFFICIENT_STOCK", 1)


def test_a_request_seen_again_is_answered_the_same_and_applied_once() -> None:
    owner = Owner()
    owner.apply(_req("RESTOCK", 5, "restock-a"))
    first = owner.apply(_req("RESERVE", 3), at=2)
    again = owner.apply(_req("RESERVE", 3), at=9)
    assert again.replayed
    assert again.decision is None
    assert again.result == first.result
    assert owner.book.available(SKU) == 2
    owner.apply(_req("RESTOCK", 5, "restock-a"))  # the same restock batch again
    assert owner.book.available(SKU) == 2


def test_the_lines_of_a_request_are_decided_each_on_its_own() -> None:
    owner = Owner()
    owner.apply(_req("RESTOCK", 3, "restock-a"))
    owner.apply(_req("RESTOCK", 1, "restock-b", [(0, "SKU-00006", 1)]))
    step = owner.apply(_req("RESERVE", lines=[(0, SKU, 2), (1, "SKU-00006", 5), (2, SKU, 1)]), at=3)
    assert step.key == "req:O-1:0,1,2:RESERVE"
    got = [(ln["ok"], ln["outcome"], ln["available"]) for ln in step.result["lines"]]  # type: ignore[index]
    assert got == [(True, "APPLIED", 1), (False, "INSUFFICIENT_STOCK", 1), (True, "APPLIED", 0)]
    assert step.decision is not None
    assert step.decision["levels"] == {SKU: [2, 0]}  # one record: the decision and the level
    assert owner.restored().available(SKU) == 0
    assert owner.restored().available("SKU-00006") == 1


def test_a_one_line_request_keeps_the_v1_key_and_v1_decisions_still_answer() -> None:
    v1 = {
        "order_id": "O-1",
        "sku": SKU,
        "quantity": 2,
        "line_index": 4,
        "line_count": 5,
        "action": "RESERVE",
        "requested_at": 1,
    }
    request = stock.as_group(v1)
    assert stock.request_key(request) == "req:O-1:4:RESERVE"
    old = {"ok": True, "outcome": "APPLIED", "available": 7, "offset": 3, "at": 2}
    book = stock.StockBook()
    book.rebuild([("stock:" + SKU, {"available": 7, "offset": 3}), ("req:O-1:4:RESERVE", old)])
    assert book.available(SKU) == 7
    step = stock.handle(request, book, old, now_ms=5)
    assert step.replayed
    assert _line(step) == {
        "line_index": 4,
        "sku": SKU,
        "quantity": 2,
        "ok": True,
        "outcome": "APPLIED",
        "available": 7,
    }
    fresh = stock.handle(_req("RESERVE", 3, "O-2"), book, None, now_ms=6)
    assert fresh.decision is not None
    assert fresh.decision["levels"] == {SKU: [1, 4]}  # newer than the old layout's level


def test_a_crash_that_lost_the_last_decisions_restores_the_level_before_them() -> None:
    """Decisions of one SKU go to one changelog partition in order, so a crash loses a
    suffix of them at most; the book rebuilt from what is left is the level before."""
    owner = Owner()
    owner.apply(_req("RESTOCK", 5, "restock-a"))
    owner.apply(_req("RESERVE", 2, "O-1"))
    kept = dict(owner.table)
    owner.apply(_req("RESERVE", 2, "O-2"))
    owner.table = kept
    book = owner.restored()
    assert book.available(SKU) == 3
    again = stock.handle(_req("RESERVE", 2, "O-2"), book, None, now_ms=9)
    assert _line(again)["available"] == 1  # decided again, the same way


def test_non_positive_quantity_is_refused() -> None:
    owner = Owner()
    owner.apply(_req("RESTOCK", 5, "restock-a"))
    assert _line(owner.apply(_req("RESERVE", 0)))["outcome"] == "INVALID_QUANTITY"
    assert owner.book.available(SKU) == 5


def test_pruning_keeps_each_skus_latest_decision() -> None:
    owner = Owner()
    pruning = stock.Pruning(retention_ms=100)
    owner.apply(_req("RESTOCK", 9, "restock-a"), at=1)
    for n, at in enumerate((10, 20, 30)):
        step = owner.apply(_req("RESERVE", 1, f"O-{n}"), at=at)
        assert step.decision is not None
        pruning.add(3, step.key, step.decision)
    assert pruning.due(3, owner.book, now_ms=50) == []  # not old yet
    due = pruning.due(3, owner.book, now_ms=1000)
    assert due == ["req:O-0:0:RESERVE", "req:O-1:0:RESERVE"]  # O-2 holds the level
    for key in due:
        del owner.table[key]
    assert owner.restored().available(SKU) == 6
    step = owner.apply(_req("RESERVE", 1, "O-9"), at=1001)
    assert step.decision is not None
    pruning.add(3, step.key, step.decision)
    assert pruning.due(3, owner.book, now_ms=5000) == ["req:O-2:0:RESERVE"]  # now superseded


def test_restocks_are_never_pruned_and_rejections_pin_nothing() -> None:
    owner = Owner()
    pruning = stock.Pruning(retention_ms=1)
    restock = owner.apply(_req("RESTOCK", 1, "restock-a"), at=1)
    assert restock.decision is not None
    pruning.add(3, restock.key, restock.decision)
    refused = owner.apply(_req("RESERVE", 5), at=2)
    assert refused.decision is not None
    assert refused.decision["levels"] == {}
    pruning.add(3, refused.key, refused.decision)
    assert pruning.due(3, owner.book, now_ms=100) == ["req:O-1:0:RESERVE"]


def test_rebuilt_queues_hold_what_the_table_holds_in_time_order() -> None:
    owner = Owner()
    owner.apply(_req("RESTOCK", 9, "restock-a"), at=1)
    owner.apply(_req("RESERVE", 1, "O-2"), at=30)
    owner.apply(_req("RESERVE", 1, "O-1"), at=20)
    pruning = stock.Pruning(retention_ms=1)
    pruning.rebuild(owner.table.items(), partitions=6)
    assert [key for _at, key, _skus in pruning.queues[3]] == [
        "req:O-1:0:RESERVE",
        "req:O-2:0:RESERVE",
    ]
    assert stock.partition_of("stock:" + SKU, {}, 6) == 3
