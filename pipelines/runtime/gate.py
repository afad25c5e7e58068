"""One owner for pausing, holding, seeking back and resuming a stage's input partitions.

Several parties want an input partition stopped or restarted: the backpressure controller
(the downstream group lags, or has not been measured yet), Faust itself (it resumes
partitions after a rebalance and when a stream buffer drains) and the commit guard (it
re-reads a partition whose commit is stuck). If each called the consumer itself, the last
one would win: a Faust resume would let in the work backpressure holds back. So they ask
the gate, and only the gate calls the consumer:

* a *reason* claims topics or partitions with `hold` and gives them up with `release`; a
  partition is held while any reason claims it (`HoldTable`, pure), so releasing one reason
  never resumes what another still holds;
* `apply` makes the consumer match: it pauses what is held and, for what it held before
  and no longer does, seeks back to just after the last record the stage took (`taken`),
  then resumes it (`plan` decides, pure);
* Faust's own resumes go through the consumer's `resume_partitions`, which the gate wraps
  to skip held partitions; and since Faust re-activates paused partitions on paths that
  do not call it (a drained stream buffer), every fetched record of a held partition is
  withheld too (`withholds`, called by the commit guard's record filter in
  `pipelines.runtime.commits`);
* `seek_back` is how the commit guard re-reads a partition from its commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP

#: Backpressure's reasons: the downstream group lags, or its lag is not known yet.
LAG = "backpressure: downstream lag"
UNMEASURED = "backpressure: lag not measured yet"


@dataclass
class HoldTable:
    """Which reasons hold which partitions; a topic claim covers partitions assigned later.

    Pure bookkeeping. `held` is on every fetched record's path, so the union of all claims
    is kept flattened and rebuilt on each (rare) change.
    """

    topic_claims: dict[str, frozenset[str]] = field(default_factory=dict)
    partition_claims: dict[str, frozenset[TP]] = field(default_factory=dict)
    _topics: frozenset[str] = field(default=frozenset(), init=False, repr=False)
    _partitions: frozenset[TP] = field(default=frozenset(), init=False, repr=False)

    def hold(
        self, reason: str, *, topics: Iterable[str] = (), partitions: Iterable[TP] = ()
    ) -> None:
        """Make `reason` claim exactly these topics and partitions (replacing its claim)."""
        self.topic_claims[reason] = frozenset(topics)
        self.partition_claims[reason] = frozenset(partitions)
        self._flatten()

    def release(self, reason: str) -> None:
        """Drop `reason`'s claim; what other reasons hold stays held."""
        self.topic_claims.pop(reason, None)
        self.partition_claims.pop(reason, None)
        self._flatten()

    def held(self, tp: TP) -> bool:
        return tp.topic in self._topics or tp in self._partitions

    def reasons(self, tp: TP) -> set[str]:
        """Every reason holding `tp` (for a state page or a log line)."""
        by_topic = {r for r, topics in self.topic_claims.items() if tp.topic in topics}
        return by_topic | {r for r, tps in self.partition_claims.items() if tp in tps}

    def _flatten(self) -> None:
        self._topics = frozenset().union(*self.topic_claims.values())
        self._partitions = frozenset().union(*self.partition_claims.values())


@dataclass(frozen=True)
class Plan:
    """The consumer calls that make it match the table."""

    pause: frozenset[TP]  # held and assigned: (re)asserted on every apply
    resume: frozenset[TP]  # held by the gate before, free now: seek back, then resume


def plan(table: HoldTable, assigned: Iterable[TP], withheld: Iterable[TP]) -> Plan:
    """What to pause and what to release, given the assignment and what the gate withheld.

    Only partitions the gate withheld (paused, or whose records or resumes it swallowed)
    are resumed: the others were never stopped by it, and resuming them could undo a
    pause of Faust's own (recovery).
    """
    assigned = list(assigned)
    pause = frozenset(tp for tp in assigned if table.held(tp))
    stopped = set(withheld)
    return Plan(pause, frozenset(tp for tp in assigned if tp not in pause and tp in stopped))


def resume_offset(
    tp: TP, last_taken: Mapping[tuple[str, int], int], committed: Mapping[Any, int | None]
) -> int | None:
    """Where a released partition is read from: just after the last record the stage took.

    Faust's own read offset means "next" after a seek and "last" otherwise, so it cannot
    say this; without a record taken since the assignment, the committed offset does.
    """
    last = last_taken.get((tp.topic, tp.partition))
    return last + 1 if last is not None else committed.get(tp)


class PartitionGate:
    """The one place an app's input partitions are paused, withheld, sought and resumed."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.table = HoldTable()
        #: Held partitions the gate stopped (paused, or swallowed their records or resumes):
        #: the ones to seek back and resume once no reason holds them.
        self.withheld: set[TP] = set()
        #: The last entry record the stage took per (topic, partition), where a release resumes.
        self.last_taken: dict[tuple[str, int], int] = {}

    def hold(
        self, reason: str, *, topics: Iterable[str] = (), partitions: Iterable[TP] = ()
    ) -> None:
        """`reason` holds these topics and partitions (until `release`); see `apply`."""
        self.table.hold(reason, topics=topics, partitions=partitions)

    def release(self, reason: str) -> None:
        """`reason` no longer holds anything; `apply` resumes what nothing else holds."""
        self.table.release(reason)

    def held(self, tp: TP) -> bool:
        return self.table.held(tp)

    def withholds(self, tp: TP) -> bool:
        """Whether `tp`'s fetched records must not reach the stage now (they are re-read
        from `resume_offset` on release, so the partition is marked for the seek)."""
        if self.table.held(tp):
            self.withheld.add(tp)
            return True
        return False

    def taken(self, topic: str, partition: int, offset: int) -> None:
        """The stage took (handled and sent) this record: a release resumes after it."""
        self.last_taken[(topic, partition)] = offset

    def guard(self) -> None:
        """Route the consumer's resumes and fetched records through the gate (once).

        Per consumer, not per class, on purpose: only an app whose partitions someone holds
        filters its resumes. `pipelines.runtime` fingerprints the method wrapped here
        (`backpressure_resume_guard`), like every class-level patch.
        """
        consumer = self.app.consumer
        if getattr(consumer, "_sluice_resume_guarded", False):
            return
        consumer._sluice_hold = self.withholds  # read by commits' record filter and healer
        original = consumer.resume_partitions

        def resume_partitions(tps: Any) -> Any:
            assigned = set(consumer.assignment())
            held = {tp for tp in tps if tp in assigned and self.table.held(tp)}
            self.withheld |= held  # ours to resume on release
            return original({tp for tp in tps if tp not in held})

        consumer.resume_partitions = resume_partitions
        consumer._sluice_resume_guarded = True

    def on_assigned(self) -> None:
        """After a rebalance: guard the new assignment before Faust resumes it; what was
        taken or withheld under the old assignment says nothing about the new one."""
        self.guard()
        self.last_taken.clear()
        self.withheld = set()

    async def apply(self) -> frozenset[TP]:
        """Make the consumer match the table; returns the partitions now paused.

        On release each partition is sought back to `resume_offset`: faust-streaming drops
        records it had already fetched for a partition that got paused and would later
        treat the hole as a gap to commit past; without the seek they would be lost.
        """
        consumer: Any = self.app.consumer  # Faust's committed offsets are not in its interface
        todo = plan(self.table, consumer.assignment(), self.withheld)
        if todo.pause:
            consumer.pause_partitions(set(todo.pause))
        self.withheld = set(todo.pause)
        if todo.resume:
            for tp in todo.resume:
                target = resume_offset(tp, self.last_taken, consumer._committed_offset)
                if target is not None:
                    await consumer.seek(tp, target)
            consumer.resume_partitions(set(todo.resume))
        return todo.pause

    async def seek_back(self, tp: TP, offset: int) -> None:
        """Re-read `tp` from `offset` (the commit guard's healing). A held partition stays
        paused: the seek only moves where its fetch starts once released."""
        await self.app.consumer.seek(tp, offset)


def gate_for(app: Any) -> PartitionGate:
    """The app's gate (made on first use): every party that stops or restarts the app's
    input partitions asks this one."""
    gate: PartitionGate | None = getattr(app, "_sluice_gate", None)
    if gate is None:
        gate = app._sluice_gate = PartitionGate(app)
    return gate
