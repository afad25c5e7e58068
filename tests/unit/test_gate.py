"""The partition gate: who holds a partition, and the consumer calls that follow from it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from pipelines.backpressure import Edge, Hysteresis
from pipelines.runtime import commits
from pipelines.runtime.controller import Controller
from pipelines.runtime.faustapp import StageMetrics
from pipelines.runtime.gate import (
    LAG,
    UNMEASURED,
    HoldTable,
    PartitionGate,
    gate_for,
    plan,
    resume_offset,
)
from pipelines.settings import Settings

P0, P1 = TP("orders.placed", 0), TP("orders.placed", 1)
OTHER = TP("stock.results", 0)


# --- the table and the plan (pure) ---------------------------------------------------------


def test_a_partition_is_held_while_any_reason_holds_it() -> None:
    table = HoldTable()
    table.hold(LAG, topics=["orders.placed"])
    table.hold("guard", partitions=[P0])
    assert table.reasons(P0) == {LAG, "guard"}
    table.release(LAG)
    assert table.held(P0)  # the other reason still holds it
    assert not table.held(P1)
    table.release("guard")
    assert not table.held(P0)
    assert table.reasons(P0) == set()


def test_a_topic_claim_covers_partitions_assigned_later() -> None:
    table = HoldTable()
    table.hold(UNMEASURED, topics=["orders.placed"])
    assert table.held(TP("orders.placed", 7))
    assert not table.held(OTHER)


def test_hold_replaces_the_reason_s_claim_and_release_of_the_unknown_is_harmless() -> None:
    table = HoldTable()
    table.hold("guard", partitions=[P0])
    table.hold("guard", partitions=[P1])
    assert (table.held(P0), table.held(P1)) == (False, True)
    table.release("never-held")
    assert table.held(P1)


def test_plan_pauses_what_is_held_and_resumes_only_what_the_gate_stopped() -> None:
    table = HoldTable()
    table.hold(LAG, partitions=[P0])
    todo = plan(table, [P0, P1, OTHER], withheld={P1})
    assert todo.pause == {P0}
    assert todo.resume == {P1}  # OTHER was never stopped by the gate: left to Faust
    assert plan(table, [P1], withheld={P0}).resume == set()  # no longer assigned


def test_a_release_resumes_after_the_last_record_taken_else_at_the_commit() -> None:
    assert resume_offset(P0, {("orders.placed", 0): 41}, {P0: 7}) == 42
    assert resume_offset(P1, {("orders.placed", 0): 41}, {P1: 7}) == 7
    assert resume_offset(P1, {}, {}) is None


# --- the gate's calls on a consumer --------------------------------------------------------


class FakeConsumer:
    """The consumer calls the gate makes, recorded in order."""

    def __init__(self, assigned: set[TP], committed: dict[TP, int] | None = None) -> None:
        self.assigned = assigned
        self._committed_offset = dict(committed or {})
        self.calls: list[tuple[str, Any]] = []

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    def pause_partitions(self, tps: set[TP]) -> None:
        self.calls.append(("pause", frozenset(tps)))

    def resume_partitions(self, tps: set[TP]) -> None:
        self.calls.append(("resume", frozenset(tps)))

    async def seek(self, tp: TP, offset: int) -> None:
        self.calls.append(("seek", (tp, offset)))


def _gate(consumer: FakeConsumer) -> PartitionGate:
    gate = PartitionGate(SimpleNamespace(consumer=consumer))
    gate.guard()
    return gate


def test_held_partitions_are_paused_on_every_apply_and_their_records_withheld() -> None:
    consumer = FakeConsumer({P0, P1, OTHER})
    gate = _gate(consumer)
    gate.hold(LAG, topics=["orders.placed"])
    asyncio.run(gate.apply())
    asyncio.run(gate.apply())
    assert consumer.calls == [("pause", {P0, P1})] * 2
    hold = consumer._sluice_hold  # type: ignore[attr-defined]  # what commits' filter calls
    assert hold(P0)
    assert not hold(OTHER)


def test_faust_s_resume_skips_held_partitions() -> None:
    consumer = FakeConsumer({P0, P1, OTHER})
    gate = _gate(consumer)
    gate.hold(LAG, partitions=[P0])
    consumer.resume_partitions({P0, P1, OTHER})  # Faust, after recovery
    assert consumer.calls == [("resume", {P1, OTHER})]
    assert gate.withheld == {P0}  # swallowed: the gate resumes it on release


def test_release_seeks_back_after_the_last_record_taken_then_resumes() -> None:
    consumer = FakeConsumer({P0, P1}, committed={P0: 5, P1: 9})
    gate = _gate(consumer)
    gate.hold(LAG, topics=["orders.placed"])
    asyncio.run(gate.apply())
    gate.taken("orders.placed", 0, 20)
    gate.release(LAG)
    consumer.calls.clear()
    assert asyncio.run(gate.apply()) == set()
    assert sorted(c for c in consumer.calls if c[0] == "seek") == [
        ("seek", (P0, 21)),
        ("seek", (P1, 9)),
    ]
    assert consumer.calls[-1] == ("resume", {P0, P1})
    consumer.calls.clear()
    asyncio.run(gate.apply())
    assert consumer.calls == []  # released once: nothing left to do


def test_releasing_one_reason_does_not_resume_what_another_holds() -> None:
    consumer = FakeConsumer({P0, P1}, committed={P0: 5, P1: 5})
    gate = _gate(consumer)
    gate.hold(UNMEASURED, topics=["orders.placed"])
    gate.hold(LAG, partitions=[P0])
    asyncio.run(gate.apply())
    gate.release(UNMEASURED)
    consumer.calls.clear()
    asyncio.run(gate.apply())
    assert consumer.calls == [("pause", {P0}), ("seek", (P1, 5)), ("resume", {P1})]
    consumer.resume_partitions({P0})  # nor does Faust's resume
    assert consumer.calls[-1] == ("resume", set())


def test_a_seek_back_leaves_a_held_partition_paused() -> None:
    consumer = FakeConsumer({P0})
    gate = _gate(consumer)
    gate.hold(LAG, partitions=[P0])
    asyncio.run(gate.seek_back(P0, 3))
    asyncio.run(gate.apply())
    assert consumer.calls == [("seek", (P0, 3)), ("pause", {P0})]


def test_a_rebalance_forgets_what_was_taken_and_withheld() -> None:
    consumer = FakeConsumer({P0}, committed={P0: 4})
    gate = _gate(consumer)
    gate.hold(LAG, partitions=[P0])
    gate.taken("orders.placed", 0, 30)
    assert consumer._sluice_hold(P0)  # type: ignore[attr-defined]
    gate.on_assigned()
    gate.release(LAG)
    asyncio.run(gate.apply())
    assert consumer.calls == []  # not withheld under this assignment: Faust resumes it


def test_guarding_twice_wraps_the_resume_once() -> None:
    consumer = FakeConsumer({P0})
    gate = _gate(consumer)
    wrapped = consumer.resume_partitions
    gate.guard()
    assert consumer.resume_partitions is wrapped


def test_the_healer_re_reads_through_the_app_s_gate() -> None:
    consumer = FakeConsumer({P0})
    app = SimpleNamespace(consumer=consumer)
    gate = gate_for(app)
    assert gate_for(app) is gate
    consumer._acked = {P0: [12]}  # type: ignore[attr-defined]
    consumer._unacked_messages = set()  # type: ignore[attr-defined]
    consumer._committed_offset = {P0: 10}
    healer = commits.HoleHealer(app, stall_s=0.0)  # type: ignore[arg-type]
    asyncio.run(healer.tick())  # a hole at the head, stuck for stall_s
    assert consumer.calls == [("seek", (P0, 10))]


# --- the backpressure controller asks the gate ---------------------------------------------


class FakeSignal:
    def __init__(self, lags: list[int]) -> None:
        self.lags, self.lag = lags, 0
        self.state = Hysteresis(high=100, low=10)

    async def ameasure(self) -> str | None:
        self.lag = self.lags.pop(0)
        return self.state.update(self.lag)


def _controller(consumer: FakeConsumer, lags: list[int], tmp_path: Any) -> Controller:
    app = SimpleNamespace(consumer=consumer, conf=SimpleNamespace(datadir=str(tmp_path)))
    settings = Settings(backpressure={"high": 100, "low": 10})  # type: ignore[arg-type]
    edge = Edge("sluice-notifications", ["orders.confirmed"])
    controller = Controller(app, settings, edge, ["orders.placed"], metrics=StageMetrics("orders"))  # type: ignore[arg-type]
    controller.signal = FakeSignal(lags)  # type: ignore[assignment]
    return controller


def test_a_new_worker_takes_no_entry_work_until_the_lag_is_known(tmp_path: Any) -> None:
    consumer = FakeConsumer(set())
    controller = _controller(consumer, [500, 5], tmp_path)
    entry = TP(next(iter(controller.entry)), 0)  # orders.placed, with the topic prefix
    consumer.assigned, consumer._committed_offset = {entry}, {entry: 3}
    controller.on_assigned()
    consumer.resume_partitions({entry})  # Faust's resume before the first tick
    assert consumer.calls == [("resume", set())]
    asyncio.run(controller.tick())  # lag 500: paused for the lag now
    assert consumer.calls[-1] == ("pause", {entry})
    assert controller.state()["paused"]
    asyncio.run(controller.tick())  # lag 5: released, read again from the commit
    assert consumer.calls[-2:] == [("seek", (entry, 3)), ("resume", {entry})]
    assert controller.state()["paused_partitions"] == []
