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

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import faust
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from pipelines.runtime import records
from pipelines.runtime.patching import Patch, Target

log = logging.getLogger(__name__)

STALE_S = 30.0  # how long records past a sought offset count as fetched before the seek
REVOKE_COMMIT_S = 5.0  # a commit in the revoke callback must not stall the rebalance
STALL_S = 15.0  # a head hole older than this is re-read; a slow record takes far less


_OUTSIDE_WAITS: set[str] = set()


def outside_wait(reason: str, waiting: bool) -> None:
    """Say that the stage is stalled on purpose by `reason` (a schema registry outage),
    or no longer: meanwhile records sit unprocessed behind their commit by design, and
    re-reading them (what the healer does for a stall) would only fetch them twice."""
    if waiting:
        _OUTSIDE_WAITS.add(reason)
    else:
        _OUTSIDE_WAITS.discard(reason)


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


def _fresh(consumer: Any, expected: dict[TP, tuple[int, float]], tp: TP, message: Any) -> bool:
    """Whether a fetched record goes to the streams: not held by backpressure, not stale."""
    hold = getattr(consumer, "_sluice_hold", None)
    if hold is not None and hold(tp):
        return False  # held by backpressure: re-read from where the stage stopped
    wanted = expected.get(tp)
    if wanted is None:
        return True
    if is_stale(message.offset, wanted[0], time.monotonic() - wanted[1]):
        return False
    if message.offset != wanted[0]:
        log.warning(
            "%s[%d]: sought offset %d, first record is %d (deleted by retention?)",
            tp.topic,
            tp.partition,
            wanted[0],
            message.offset,
        )
    del expected[tp]
    return True


def _guard_seeks(base_seek: Any, base_getmany: Any, base_seek_to_committed: Any) -> tuple[Any, ...]:
    """Remember every seek, and hold back the records fetched before it."""

    def streamed(consumer: Any, topic: str) -> bool:
        # Only stream inputs: table changelogs are read by Faust's recovery, which seeks
        # on its own and may read them compacted (with holes).
        return bool(consumer.app.topics.acks_enabled_for(topic))

    async def seek(self: Consumer, partition: TP, offset: int) -> None:
        await base_seek(self, partition, offset)
        if streamed(self, partition.topic):
            _expected(self)[TP(partition.topic, partition.partition)] = (offset, time.monotonic())

    async def seek_to_committed(self: Any) -> Any:
        offsets = await base_seek_to_committed(self)
        now = time.monotonic()
        expected = _expected(self)
        for tp, offset in offsets.items():
            if offset is not None and offset >= 0 and streamed(self, tp.topic):
                expected[TP(tp.topic, tp.partition)] = (offset, now)
        return offsets

    def getmany(self: Consumer, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        # Faust's getmany (base_getmany, fingerprinted) with the filter inside it
        return records.fetched(self, timeout, partial(_fresh, self, _expected(self)))

    return seek, getmany, seek_to_committed


def hold_partitions(consumer: Any, hold: Callable[[TP], bool]) -> None:
    """Withhold every fetched record of a partition for which `hold(tp)` is true."""
    consumer._sluice_hold = hold


async def commit_now(consumer: Consumer, tries: int = 3) -> bool:
    """Commit what is acknowledged now, after (not instead of) a commit in flight."""
    for _ in range(tries):
        await consumer.maybe_wait_for_commit_to_finish()
        if await consumer.commit(start_new_transaction=False):
            return True
    return False


def _positions(consumer: Any) -> str:
    """Committed offset, first unacknowledged gap and read offset per stream partition."""
    parts = []
    for tp in sorted(consumer._acked.keys() | consumer._committed_offset.keys()):
        acked = consumer._acked.get(tp) or []
        parts.append(
            f"{tp.topic.rsplit('.', 1)[-1]}[{tp.partition}] committed="
            f"{consumer._committed_offset.get(tp)} acked={min(acked) if acked else None}.."
            f"{max(acked) if acked else None}/{len(acked)} read={consumer._read_offset.get(tp)}"
        )
    return "; ".join(parts)


def _final_commit(base: Any) -> tuple[Any]:
    """Make the commit at shutdown happen even while the timer's commit is in flight.

    Faust's `commit()` returns without committing when another commit is running (it only
    waits for that one), and the periodic commit often is when a worker stops under load:
    the last second of work would stay uncommitted and be done again by the worker that
    takes the partitions over. A drained worker must hand over exactly where it stopped.
    """

    async def commit_and_end_transactions(self: Consumer) -> None:
        if not await commit_now(self):
            await base(self)
        log.debug("final commit: %s", _positions(self))

    return (commit_and_end_transactions,)


def _commit_on_revoke(base: Any) -> tuple[Any]:
    """Commit what is done before a rebalance takes partitions away.

    Faust drops its bookkeeping of revoked partitions first and commits afterwards, so
    the work done since the last timer commit is discarded and the next owner does it
    again (up to a commit interval's worth on every member at every rebalance). Kafka's
    own advice is to commit in the revoke callback; records still in flight are not
    acknowledged yet and stay uncommitted, which is the documented bound.
    """

    async def on_partitions_revoked(self: Consumer, revoked: Any) -> None:
        # What Faust does a moment later anyway (stop handing records to the streams, let
        # the ones in progress finish), but before its bookkeeping is dropped, so that
        # the commit at the end of wait_empty still covers them.
        self.stop_flow()
        self.app.flow_control.suspend()
        try:
            await asyncio.wait_for(self.wait_empty(), timeout=REVOKE_COMMIT_S)
        except Exception as exc:  # the next owner redoes the work: late, never lost
            log.warning("commit before revoking %d partitions failed: %r", len(revoked), exc)
        await base(self, revoked)

    return (on_partitions_revoked,)


def _refuse_hole_at_head(original: Any) -> tuple[Any]:
    """Make every Faust consumer refuse to commit across a hole at the head."""

    def _new_offset(self: Consumer, tp: Any) -> int | None:
        if hole_at_head(self._acked.get(tp) or [], self._committed_offset.get(tp)):
            return None
        offset: int | None = original(self, tp)
        return offset

    return (_new_offset,)


def _idle_behind(consumer: Any, tp: Any, committed: int | None, busy: set[Any]) -> bool:
    """A stream partition with records after its commit that nothing is working on.

    Faust hands a record to the streams and marks it read in one step; when its flow is
    suspended meanwhile (a rebalance starting), the hand-over is abandoned but the read
    offset still moves on. If that was the partition's last record, no later record
    reveals the hole: the commit stays before it, nobody processes it, and the lag never
    drains. Nothing in flight, nothing acknowledged and yet records beyond the commit
    is that state; re-reading from the commit ends it.
    """
    if committed is None or tp in busy or consumer._acked.get(tp):
        return False
    if not consumer.app.topics.acks_enabled_for(tp.topic):
        return False  # changelogs: read by recovery, never committed this way
    hold = getattr(consumer, "_sluice_hold", None)
    if hold is not None and hold(tp):
        return False  # held by backpressure on purpose
    try:
        end = consumer.highwater(tp)
    except Exception:  # not fetched yet: nothing known to be behind
        return False
    return end is not None and end > committed


class HoleHealer:
    """Re-read partitions whose commit has been stuck on a hole for `stall_s`."""

    def __init__(self, app: faust.App, stall_s: float = STALL_S) -> None:
        self.app, self.stall_s = app, stall_s
        self.since: dict[Any, tuple[int, float]] = {}
        self.healed = 0

    async def tick(self) -> None:
        if _OUTSIDE_WAITS:  # stalled on purpose; the stall clock starts again afterwards
            self.since = {}
            return
        consumer: Any = self.app.consumer  # Faust's bookkeeping is not in its interface
        now = time.monotonic()
        holes: dict[Any, int] = {}
        busy = {m.tp for m in list(consumer._unacked_messages)}
        for tp in consumer.assignment():
            committed = consumer._committed_offset.get(tp)
            if hole_at_head(consumer._acked.get(tp) or [], committed) or _idle_behind(
                consumer, tp, committed, busy
            ):
                holes[tp] = committed
        self.since = {
            tp: self.since[tp] if tp in self.since and self.since[tp][0] == c else (c, now)
            for tp, c in holes.items()
        }
        for tp, (committed, first_seen) in list(self.since.items()):
            if now - first_seen >= self.stall_s:
                log.warning(
                    "commit of %s[%d] stuck at offset %d (a hole, or records nobody took); "
                    "re-reading from there",
                    tp.topic,
                    tp.partition,
                    committed,
                )
                await consumer.seek(tp, committed)
                self.healed += 1
                del self.since[tp]


def install(app: faust.App, interval_s: float = 2.0) -> HoleHealer:
    """Run the healer of `app`'s commit holes (the class-level half of the guard is
    `PATCHES`, applied by `pipelines.runtime` when the app is made)."""
    healer = HoleHealer(app)

    @app.timer(interval_s)  # type: ignore[untyped-decorator]
    async def heal_commit_holes() -> None:
        await healer.tick()

    return healer


PATCHES = (
    Patch(
        "commit_guard_hole_at_head",
        "never commit past a hole of one record at the head (faust-streaming #312/#606)",
        (Target(Consumer, "_new_offset", "1d2c7ea89a7ad4f1"),),
        _refuse_hole_at_head,
    ),
    Patch(
        "commit_guard_seeks",
        "remember seeks; drop records fetched before them; enforce backpressure holds",
        (
            Target(Consumer, "seek", "b86a9fe05f956b30"),
            Target(Consumer, "getmany", "4b168d84882a70d6"),
            Target(faust_aiokafka.Consumer, "seek_to_committed", "f1d483b861b0328b"),
        ),
        _guard_seeks,
    ),
    Patch(
        "commit_guard_final_commit",
        "the commit at shutdown happens even while the timer's commit is in flight",
        (Target(Consumer, "commit_and_end_transactions", "892377824b11a2ee"),),
        _final_commit,
    ),
    Patch(
        "commit_guard_commit_on_revoke",
        "commit what is done before a rebalance takes partitions away",
        (Target(Consumer, "on_partitions_revoked", "d04b7ae72c6fc206"),),
        _commit_on_revoke,
    ),
)
