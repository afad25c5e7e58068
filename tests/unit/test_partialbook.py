"""The analytics stage's partial book: what is published when, and what is forgotten."""

from __future__ import annotations

from pipelines.stages import windows
from pipelines.stages.partialbook import (
    FORGET_AFTER_MS,
    PartialBook,
    partial_key,
    split_partial_key,
    window_metric,
    window_start_ms,
)
from pipelines.stages.windows import WindowConfig

CFG = WindowConfig(tumbling_s=60, hopping_s=3600, hop_s=900, lateness_s=30, top_n=2)
T = 1_800_000_000_000 - 1_800_000_000_000 % 3_600_000  # an hour boundary
MINUTE = 60_000
CLOSES = T + MINUTE + 30_000  # a minute window starting at T closes here (lateness 30 s)


def _partial(count: int) -> windows.Partial:
    return {**windows.empty(), "count": count}


def _mark(book: PartialBook, metric: str, partition: int, count: int, start: int = T) -> str:
    window_key = f"{metric}|all|{start}"
    key = partial_key(window_key, partition)
    size = windows.window_size_ms(metric, CFG)
    book.mark(key, window_key, size, partition, _partial(count))
    return key


def test_partial_keys_and_window_keys_round_trip() -> None:
    key = partial_key(f"revenue_1h|EUR|{T}", 5)
    assert key == f"revenue_1h|EUR|{T}#5"
    assert split_partial_key(key) == (f"revenue_1h|EUR|{T}", 5)
    assert window_metric(f"revenue_1h|EUR|{T}") == "revenue_1h"
    assert window_start_ms(f"orders_rejected|a|b|{T}") == T  # the start is the last field


def test_a_changed_partial_is_published_once_with_its_last_value() -> None:
    book = PartialBook(CFG)
    _mark(book, "orders_placed", 2, 1)
    _mark(book, "orders_placed", 2, 3)
    _mark(book, "orders_placed", 4, 1)
    assert book.take_dirty() == [
        {"window_key": f"orders_placed|all|{T}", "size_ms": MINUTE, "partition": 2,
         "partial": _partial(3)},
        {"window_key": f"orders_placed|all|{T}", "size_ms": MINUTE, "partition": 4,
         "partial": _partial(1)},
    ]  # fmt: skip
    assert book.take_dirty() == []


def test_a_partial_is_published_again_once_when_its_window_closes() -> None:
    book = PartialBook(CFG)
    key = _mark(book, "orders_placed", 0, 1)
    book.take_dirty()
    stored = {key: _partial(7)}
    book.close_due(CLOSES - 1, stored.get)
    assert book.take_dirty() == []  # not closed yet
    book.close_due(CLOSES, stored.get)
    assert [m["partial"] for m in book.take_dirty()] == [_partial(7)]  # the stored value
    book.close_due(CLOSES + 5_000, stored.get)
    assert book.take_dirty() == []  # only once
    _mark(book, "orders_placed", 0, 8)  # a late change still goes out...
    book.take_dirty()
    book.close_due(CLOSES + 10_000, stored.get)
    assert book.take_dirty() == []  # ...without another close


def test_a_dirty_partial_at_its_close_goes_out_once_with_its_change() -> None:
    book = PartialBook(CFG)
    key = _mark(book, "orders_placed", 0, 1)
    book.close_due(CLOSES, {key: _partial(99)}.get)
    assert [m["partial"] for m in book.take_dirty()] == [_partial(1)]  # the change, once
    book.close_due(CLOSES + 1, {key: _partial(99)}.get)
    assert [m["partial"] for m in book.take_dirty()] == [_partial(99)]  # then the close


def test_a_partial_forgotten_before_its_close_is_not_published() -> None:
    book = PartialBook(CFG)
    _mark(book, "orders_placed", 0, 1)
    book.take_dirty()
    book.close_due(CLOSES, lambda key: None)
    assert book.take_dirty() == []


def test_hourly_partials_close_after_their_hour() -> None:
    book = PartialBook(CFG)
    key = _mark(book, "revenue_1h", 1, 1)
    book.take_dirty()
    book.close_due(CLOSES, {key: _partial(1)}.get)
    assert book.take_dirty() == []
    book.close_due(T + 3_600_000 + 30_000, {key: _partial(1)}.get)
    assert [m["size_ms"] for m in book.take_dirty()] == [3_600_000]


def test_partials_expire_an_hour_after_their_close_per_partition_within_a_budget() -> None:
    book = PartialBook(CFG)
    keys = [_mark(book, "orders_placed", 0, 1, start=T + i * MINUTE) for i in range(10)]
    other = _mark(book, "orders_placed", 1, 1)
    forget = CLOSES + FORGET_AFTER_MS
    assert book.expired(0, forget) == []  # not before the hour has passed
    late = forget + 20 * MINUTE
    assert book.expired(0, late, budget=3) == [k.encode() for k in keys[:3]]
    assert book.expired(0, late) == [k.encode() for k in keys[3:]]  # budget 8: the rest
    assert book.expired(0, late) == []
    assert book.expired(1, late) == [other.encode()]


def test_a_partial_marked_again_after_it_expired_is_tracked_afresh() -> None:
    book = PartialBook(CFG)
    key = _mark(book, "orders_placed", 0, 1)
    book.take_dirty()
    late = CLOSES + FORGET_AFTER_MS + 1
    assert book.expired(0, late) == [key.encode()]
    book.close_due(late, {key: _partial(1)}.get)
    assert book.take_dirty() == []  # forgotten: nothing left to close
    _mark(book, "orders_placed", 0, 2)
    book.take_dirty()
    book.close_due(late, {key: _partial(2)}.get)
    assert [m["partial"] for m in book.take_dirty()] == [_partial(2)]  # closes again
    assert book.expired(0, late + FORGET_AFTER_MS) == [key.encode()]


def test_resend_marks_every_stored_partial_with_its_window_size() -> None:
    book = PartialBook(CFG)
    assert not book.resent
    stored = [
        (partial_key(f"orders_placed|all|{T}", 3).encode(), _partial(4)),
        (partial_key(f"revenue_1h|USD|{T}", 0).encode(), _partial(5)),
    ]
    book.resend(stored)
    assert book.resent
    assert book.take_dirty() == [
        {"window_key": f"orders_placed|all|{T}", "size_ms": MINUTE, "partition": 3,
         "partial": _partial(4)},
        {"window_key": f"revenue_1h|USD|{T}", "size_ms": 3_600_000, "partition": 0,
         "partial": _partial(5)},
    ]  # fmt: skip


def test_a_window_record_is_published_only_when_it_changed() -> None:
    book = PartialBook(CFG)
    record = {"window_key": "w", "count": 1}
    assert book.first_sight("w", record)
    assert not book.first_sight("w", dict(record))
    assert book.first_sight("w", {**record, "count": 2})
    assert book.first_sight("v", record)


def test_two_books_share_nothing() -> None:
    one, two = PartialBook(CFG), PartialBook(CFG)
    _mark(one, "orders_placed", 0, 1)
    assert one.first_sight("w", {"n": 1})
    assert two.take_dirty() == []
    assert two.expired(0, CLOSES + 2 * FORGET_AFTER_MS) == []
    assert two.first_sight("w", {"n": 1})
