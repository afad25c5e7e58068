"""Keep Faust's offset commits honest: never commit past a hole, never stall on one.

Faust commits, per partition, the end of the first run of consecutive acknowledged
offsets. Two known upstream weaknesses (faust-streaming issues 312 and 606; robinhood/faust
625) bite around rebalances and pauses, where records Faust had fetched are dropped
before any agent saw them:

* a hole of exactly one record right after the committed offset is committed past, so
  that record is never processed by anyone (silent loss);
* a longer hole stops the partition's commits for good: the work is done but the lag
  never drains, and a restart re-processes everything since.

The guard closes both. `_new_offset` refuses to commit while the first acknowledged
offset is beyond the committed one (a hole at the head), and a timer re-reads a
partition from its committed offset once such a hole has persisted: the missing records
are fetched again and processed, the ones already done are processed again, which the
stages' idempotence makes harmless (that is the at-least-once contract anyway).

The holes come from seeks. Faust's fetch loop hands records to the streams one by one and
may be blocked on a full stream buffer for a while; a seek in the meantime (after a
rebalance, on a backpressure resume, or by the healer) leaves the rest of the batch in
hand *stale*. Faust delivers those stale records anyway, advances its read offset past
them, records the distance as a "gap" it later treats as done, and then drops the fresh
records from the seek position as already read. So every seek is remembered here, and
records of that partition are held back until the fetch from the sought offset arrives.
Stage input topics are neither compacted nor transactional, so that fetch starts exactly
at the sought offset; should it not (retention deleted it), the first later record is
accepted after `STALE_S`.

The same filter enforces backpressure holds (`hold_partitions`): Faust's own pause is a
set of "active" partitions that several of its paths re-activate (a stream buffer that
drained, recovery after a rebalance), so the controller's decision is applied here, where
every record passes, and the controller seeks back when it releases a partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import faust
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

log = logging.getLogger(__name__)

STALE_S = 30.0  # how long records past a sought offset count as fetched before the seek
STALL_S = 15.0  # a head hole older than this is re-read; a slow record takes far less


def hole_at_head(acked: list[int], committed: int | None) -> bool:
    """True when the oldest acknowledged offset is past the next one to commit."""
    return bool(acked) and committed is not None and min(acked) > committed


def _expected(consumer: Any) -> dict[TP, tuple[int, float]]:
    """Per partition: the offset the next fresh record must have, and when it was sought."""
    table: dict[TP, tuple[int, float]] | None = getattr(consumer, "_sluice_expected", None)
    if table is None:
        table = consumer._sluice_expected = {}
    return table


def is_stale(offset: int, wanted: int, sought_for_s: float) -> bool:
    """Whether a record at `offset` predates the seek to `wanted`."""
    return offset < wanted or (offset > wanted and sought_for_s < STALE_S)


def _patch_seeks() -> None:
    """Remember every seek, and hold back the records fetched before it."""
    base_seek = Consumer.seek
    base_getmany = Consumer.getmany
    driver = faust_aiokafka.Consumer
    base_seek_to_committed = driver.seek_to_committed

    async def seek(self: Consumer, partition: TP, offset: int) -> None:
        await base_seek(self, partition, offset)
        _expected(self)[TP(partition.topic, partition.partition)] = (offset, time.monotonic())

    async def seek_to_committed(self: Any) -> Any:
        offsets = await base_seek_to_committed(self)
        now = time.monotonic()
        expected = _expected(self)
        for tp, offset in offsets.items():
            if offset is not None and offset >= 0:
                expected[TP(tp.topic, tp.partition)] = (offset, now)
        return offsets

    async def getmany(self: Consumer, timeout: float) -> Any:
        expected = _expected(self)
        async for tp, message in base_getmany(self, timeout):
            hold = getattr(self, "_sluice_hold", None)
            if hold is not None and hold(tp):
                continue  # held by backpressure: re-read from where the stage stopped
            wanted = expected.get(tp)
            if wanted is not None:
                if is_stale(message.offset, wanted[0], time.monotonic() - wanted[1]):
                    continue
                if message.offset != wanted[0]:
                    log.warning(
                        "%s[%d]: sought offset %d, first record is %d (deleted by retention?)",
                        tp.topic,
                        tp.partition,
                        wanted[0],
                        message.offset,
                    )
                del expected[tp]
            yield tp, message

    Consumer.seek = seek  # type: ignore[method-assign]
    Consumer.getmany = getmany  # type: ignore[method-assign]
    driver.seek_to_committed = seek_to_committed  # type: ignore[method-assign]


def hold_partitions(consumer: Any, hold: Callable[[TP], bool]) -> None:
    """Withhold every fetched record of a partition for which `hold(tp)` is true."""
    consumer._sluice_hold = hold


def _patch_new_offset() -> None:
    """Make every Faust consumer refuse to commit across a hole at the head."""
    if getattr(Consumer, "_sluice_guarded", False):
        return
    original = Consumer._new_offset

    def _new_offset(self: Consumer, tp: Any) -> int | None:
        if hole_at_head(self._acked.get(tp) or [], self._committed_offset.get(tp)):
            return None
        return original(self, tp)

    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    Consumer._sluice_guarded = True  # type: ignore[attr-defined]
    _patch_seeks()


class HoleHealer:
    """Re-read partitions whose commit has been stuck on a hole for `stall_s`."""

    def __init__(self, app: faust.App, stall_s: float = STALL_S) -> None:
        self.app, self.stall_s = app, stall_s
        self.since: dict[Any, tuple[int, float]] = {}
        self.healed = 0

    async def tick(self) -> None:
        consumer: Any = self.app.consumer  # Faust's bookkeeping is not in its interface
        now = time.monotonic()
        holes: dict[Any, int] = {}
        for tp in consumer.assignment():
            committed = consumer._committed_offset.get(tp)
            if hole_at_head(consumer._acked.get(tp) or [], committed):
                holes[tp] = committed
        self.since = {
            tp: self.since[tp] if tp in self.since and self.since[tp][0] == c else (c, now)
            for tp, c in holes.items()
        }
        for tp, (committed, first_seen) in list(self.since.items()):
            if now - first_seen >= self.stall_s:
                log.warning(
                    "commit of %s[%d] stuck at offset %d behind a hole; re-reading from there",
                    tp.topic,
                    tp.partition,
                    committed,
                )
                await consumer.seek(tp, committed)
                self.healed += 1
                del self.since[tp]


def install(app: faust.App, interval_s: float = 2.0) -> HoleHealer:
    """Guard `app`'s commits (see the module docstring)."""
    _patch_new_offset()
    healer = HoleHealer(app)

    @app.timer(interval_s)  # type: ignore[untyped-decorator]
    async def heal_commit_holes() -> None:
        await healer.tick()

    return healer
