"""FifoMap: the intake's large stores, in first-insertion order, with O(1) operations."""

from __future__ import annotations

import gc
import time

from hypothesis import given
from hypothesis import strategies as st

from producers.intake.fifo import SHARDS, FifoMap
from producers.intake.idempotency import PRUNE_BATCH, IdempotencyStore, KeyEntry
from producers.intake.status import StatusView


def test_order_is_first_insertion_and_updates_keep_their_place() -> None:
    fifo: FifoMap[int] = FifoMap()
    for n, key in enumerate("abc"):
        fifo.put(key, n)
    fifo.put("a", 10)
    assert list(fifo.keys()) == ["a", "b", "c"]
    assert fifo.oldest() == ("a", 10)
    fifo.popleft()
    assert fifo.oldest() == ("b", 1)
    assert len(fifo) == fifo.slots == 2


def test_a_key_popped_out_of_order_frees_its_slot_at_the_front() -> None:
    fifo: FifoMap[int] = FifoMap()
    for n, key in enumerate("abc"):
        fifo.put(key, n)
    assert fifo.pop("a") == 0
    assert fifo.pop("a") is None
    assert "a" not in fifo
    assert (len(fifo), fifo.slots) == (2, 3)
    assert fifo.oldest() == ("b", 1)  # the gone slot of "a" is dropped on the way
    assert fifo.slots == 2
    fifo.put("b", 5)
    fifo.pop("c")
    fifo.put("c", 7)  # back after a pop: it keeps its place until the slot is freed
    assert list(fifo.keys()) == ["b", "c"]


@given(st.lists(st.tuples(st.sampled_from(["put", "pop", "popleft"]), st.integers(0, 20))))
def test_it_matches_a_list_of_slots_and_a_dict(ops: list[tuple[str, int]]) -> None:
    """Against the obvious O(n) model: a list of slots in first-insertion order, a dict."""
    fifo: FifoMap[int] = FifoMap()
    slots: list[str] = []
    live: dict[str, int] = {}
    for op, n in ops:
        key = f"k{n}"
        if op == "put":
            fifo.put(key, n)
            if key not in slots:
                slots.append(key)
            live[key] = n
        elif op == "pop":
            assert fifo.pop(key) == live.pop(key, None)
        else:
            while slots and slots[0] not in live:
                slots.pop(0)
            assert fifo.oldest() == ((slots[0], live[slots[0]]) if slots else None)
            fifo.popleft()
            if slots:
                live.pop(slots.pop(0), None)
        assert len(fifo) == len(live)
        assert fifo.slots == len(slots)
        assert list(fifo.keys()) == [k for k in slots if k in live]
    assert all(fifo.get(k) == v for k, v in live.items())


def test_no_insert_stalls_on_a_resize() -> None:
    """No insert copies a big dict: the keys spread over shards, so the largest resize
    of 300,000 inserts copies a few thousand entries, where one dict would copy ~200,000
    at once (12+ ms measured). Checked by structure, not by timing a busy machine."""
    fifo: FifoMap[str] = FifoMap()
    for n in range(300_000):
        key = f"O-{n:032x}"
        fifo.put(key, key)
    largest = max(len(shard) for shard in fifo._shards)
    assert largest <= 2 * 300_000 // SHARDS
    assert largest <= 20_000, f"a shard of {largest} keys: a resize would copy them all"


def test_acknowledged_keys_and_statuses_are_not_tracked_by_the_collector() -> None:
    keys = IdempotencyStore(window_s=3600, max_keys=10)
    view = StatusView(max_orders=10)
    keys.remember("k", KeyEntry("O-1", "fp", time.time()))
    view.accepted("O-1", 5)
    view.apply("O-2", {"status": "REJECTED", "reason": "INVALID", "updated_at": 7})
    view.apply("O-3", {"status": "CONFIRMED", "reason": None, "updated_at": 8})
    stored = [v for shard in keys._entries._shards for v in shard.values()]
    stored += [v for shard in view._orders._shards for v in shard.values()]
    assert len(stored) == 4
    assert not any(gc.is_tracked(v) for v in stored)
    got = view.get("O-2")
    assert got is not None
    assert (got.status, got.reason, got.updated_at) == ("REJECTED", "INVALID", 7)
    got = view.get("O-3")
    assert got is not None
    assert (got.status, got.reason, got.source) == ("CONFIRMED", None, "stage")
    entry = keys.get("k")
    assert entry is not None
    assert entry[:2] == ("O-1", "fp")


def test_a_pending_key_keeps_its_record_and_then_its_place() -> None:
    keys = IdempotencyStore(window_s=3600, max_keys=2)
    now = time.time()
    keys.remember("a", KeyEntry("O-1", "fp", now, {"order_id": "O-1"}))
    keys.remember("b", KeyEntry("O-2", "fp", now))
    entry = keys.get("a")
    assert entry is not None
    assert entry.pending == {"order_id": "O-1"}
    keys.remember("a", KeyEntry("O-1", "fp", now + 1))  # acknowledged: same place
    keys.remember("c", KeyEntry("O-3", "fp", now + 2))
    assert keys.get("a") is None  # first seen, first forgotten
    assert keys.get("b") is not None
    assert keys.get("c") is not None


def test_expired_keys_are_forgotten_a_slice_per_lookup() -> None:
    now = [1000.0]
    keys = IdempotencyStore(window_s=60, max_keys=10_000, clock=lambda: now[0])
    for n in range(PRUNE_BATCH * 3):
        keys.remember(f"k{n}", KeyEntry(f"O-{n}", "fp", now[0]))
    now[0] += 61
    assert keys.get("k0") is None  # too old, whether or not it is forgotten yet
    assert len(keys) == PRUNE_BATCH * 2
    keys.get("k0")
    keys.get("k0")
    assert len(keys) == 0
