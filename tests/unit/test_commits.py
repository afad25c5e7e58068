"""The commit guard: no commit across a hole at the head, and stuck holes are re-read."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP

from pipelines import runtime
from pipelines.runtime import commits

TP0 = TP("orders.placed", 0)


def test_hole_at_head() -> None:
    assert commits.hole_at_head([12, 13], 10)
    assert commits.hole_at_head([11], 10)  # one missing record is a hole too (upstream: not)
    assert not commits.hole_at_head([10, 11], 10)
    assert not commits.hole_at_head([], 10)
    assert not commits.hole_at_head([5], None)  # nothing committed yet: Faust decides


def _bookkeeping(acked: list[int], committed: int | None) -> Any:
    fake = SimpleNamespace(
        _acked=defaultdict(list, {TP0: list(acked)}),
        _acked_index=defaultdict(set, {TP0: set(acked)}),
        _gap=defaultdict(lambda: None),
        _committed_offset=defaultdict(lambda: None, {TP0: committed}),
    )
    return fake


def test_patched_new_offset_refuses_to_skip_one_missing_record() -> None:
    runtime.apply_patches()
    stuck = _bookkeeping([11, 12, 13], committed=10)
    assert Consumer._new_offset(stuck, TP0) is None
    fine = _bookkeeping([10, 11, 12], committed=10)
    assert Consumer._new_offset(fine, TP0) == 13


class _Consumer:
    def __init__(self, acked: list[int], committed: int, end: int | None = None) -> None:
        self._acked = {TP0: acked}
        self._committed_offset = {TP0: committed}
        self._unacked_messages: set[Any] = set()
        self.end = committed if end is None else end
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda _t: True))
        self.seeks: list[tuple[TP, int]] = []

    def assignment(self) -> set[TP]:
        return {TP0}

    def highwater(self, _tp: TP) -> int:
        return self.end

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


def test_healer_rereads_only_after_the_hole_persisted() -> None:
    consumer = _Consumer([12, 13], 10)
    healer = commits.HoleHealer(SimpleNamespace(consumer=consumer), stall_s=0.2)  # type: ignore[arg-type]
    asyncio.run(healer.tick())
    assert consumer.seeks == []  # first sighting: could be a record still in progress
    asyncio.run(asyncio.sleep(0.25))
    asyncio.run(healer.tick())
    assert consumer.seeks == [(TP0, 10)]
    assert healer.healed == 1


def test_healer_forgets_a_hole_that_moved() -> None:
    consumer = _Consumer([12, 13], 10)
    healer = commits.HoleHealer(SimpleNamespace(consumer=consumer), stall_s=0.2)  # type: ignore[arg-type]
    asyncio.run(healer.tick())
    consumer._committed_offset[TP0] = 11  # progress: the clock restarts
    asyncio.run(asyncio.sleep(0.25))
    asyncio.run(healer.tick())
    assert consumer.seeks == []


def test_healer_rereads_records_nobody_took() -> None:
    """Nothing in flight or acknowledged, yet records after the commit: one was dropped."""
    consumer = _Consumer([], 2, end=3)
    healer = commits.HoleHealer(SimpleNamespace(consumer=consumer), stall_s=0.2)  # type: ignore[arg-type]
    asyncio.run(healer.tick())
    asyncio.run(asyncio.sleep(0.25))
    asyncio.run(healer.tick())
    assert consumer.seeks == [(TP0, 2)]


@dataclass(frozen=True)
class _InFlight:
    tp: TP


def test_healer_leaves_busy_held_and_caught_up_partitions_alone() -> None:
    busy = _Consumer([], 2, end=3)
    busy._unacked_messages = {_InFlight(TP0)}  # a slow record in progress
    held = _Consumer([], 2, end=3)
    held._sluice_hold = lambda _tp: True  # type: ignore[attr-defined]  # backpressure
    caught_up = _Consumer([], 3, end=3)
    for consumer in (busy, held, caught_up):
        healer = commits.HoleHealer(SimpleNamespace(consumer=consumer), stall_s=0.0)  # type: ignore[arg-type]
        asyncio.run(healer.tick())
        asyncio.run(healer.tick())
        assert consumer.seeks == []


def test_records_fetched_before_a_seek_are_stale() -> None:
    assert commits.is_stale(5, wanted=10, sought_for_s=100)  # behind the seek: always
    assert commits.is_stale(40, wanted=10, sought_for_s=1)  # the rest of an old batch
    assert not commits.is_stale(10, wanted=10, sought_for_s=1)  # the fresh fetch
    assert not commits.is_stale(40, wanted=10, sought_for_s=commits.STALE_S + 1)  # retention
