"""The backpressure controller inside an upstream Faust app.

Every `interval_s` it measures the downstream group's lag (one batched admin request, off
the event loop) and feeds it to the hysteresis. While paused it pauses the app's *entry*
partitions through the Faust consumer: no new work is taken, in-flight work (for the
order stage: sagas waiting for reservation results) finishes, so nothing is lost and
stock stays consistent. Pausing is not leaving the group: the consumer keeps polling and
heartbeating, so no rebalance follows. Faust resumes partitions itself after a rebalance,
so resumes Faust issues for the entry partitions are filtered while paused (and the
pause is re-asserted on every tick): a worker joining while paused does not let work in.

The overshoot bound: after the lag crosses `high`, at most what is already in flight can
still reach the downstream topics: records buffered for the entry partitions
(`buffer_per_partition` each) and the work already started, plus one interval of
production before the controller notices.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import faust
from prometheus_client import Counter, Gauge

from pipelines.backpressure import Edge, LagSignal
from pipelines.runtime import commits
from pipelines.runtime.faustapp import StageMetrics
from pipelines.settings import Settings

log = logging.getLogger(__name__)


class Controller:
    """Pause and resume an app's entry partitions on a downstream group's lag."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        edge: Edge,
        entry_topics: list[str],
        *,
        metrics: StageMetrics,
    ) -> None:
        self.app, self.settings, self.edge = app, settings, edge
        self.entry = {settings.topic(t) for t in entry_topics}
        self.signal = LagSignal(settings, edge, settings.backpressure)
        self.paused_since: float | None = None
        self.paused_seconds = 0.0
        self.inflight: dict[int, set[bytes]] = {}
        self.last_taken: dict[tuple[str, int], int] = {}
        self.paused_tps: set[Any] = set()
        self.measured = False  # until the first lag reading, a new worker takes no entry work
        registry = metrics.registry
        self.paused_gauge = Gauge(
            "sluice_paused_partitions", "Entry partitions paused", ["stage"], registry=registry
        ).labels(metrics.stage)
        self.transitions = Counter(
            "sluice_backpressure_transitions",
            "Pause/resume decisions",
            ["stage", "action"],
            registry=registry,
        )
        self.seconds = Counter(
            "sluice_backpressure_paused_seconds", "Time spent paused", ["stage"], registry=registry
        ).labels(metrics.stage)
        self.inflight_gauge = Gauge(
            "sluice_inflight",
            "Work taken but not finished (orders placed, not decided)",
            ["stage"],
            registry=registry,
        ).labels(metrics.stage)
        self.lag_gauge = Gauge(
            "sluice_downstream_lag",
            "Lag of the downstream group",
            ["stage", "group"],
            registry=registry,
        ).labels(metrics.stage, edge.group)
        self.stage = metrics.stage

    def holds(self, tp: Any) -> bool:
        """Whether records of `tp` must not reach the stage now."""
        if tp.topic in self.entry and self._desired([tp]):
            self.paused_tps.add(tp)  # records were withheld: seek back when released
            return True
        return False

    def _guard_resumes(self) -> None:
        """Wrap the consumer's resume so Faust's own resumes skip paused entry partitions.

        Faust re-activates partitions on other paths too (a drained stream buffer), so the
        decision is also enforced where records are fetched (`commits.hold_partitions`).
        This is per consumer, not per class, on purpose: only an app with a controller
        filters its resumes. `pipelines.runtime` fingerprints the method wrapped here
        (`backpressure_resume_guard`), like every class-level patch.
        """
        consumer = self.app.consumer
        if getattr(consumer, "_sluice_resume_guarded", False):
            return
        commits.hold_partitions(consumer, self.holds)
        original = consumer.resume_partitions

        def resume_partitions(tps: Any) -> Any:
            held = self._desired(self._entry_partitions())
            self.paused_tps |= {tp for tp in tps if tp in held}  # ours to resume later
            return original({tp for tp in tps if tp not in held})

        consumer.resume_partitions = resume_partitions  # type: ignore[method-assign]
        consumer._sluice_resume_guarded = True  # type: ignore[attr-defined]

    async def tick(self) -> None:
        """Measure, decide, and make the consumer match the decision."""
        self._guard_resumes()
        if not self.settings.backpressure.enabled:
            await self._apply()
            return
        try:
            transition = await self.signal.ameasure()
        except Exception as exc:  # the broker may be briefly away; keep the last decision
            log.warning("backpressure: cannot read the lag of %s: %s", self.edge.group, exc)
            return
        self.measured = True
        self.lag_gauge.set(self.signal.lag)
        if transition is not None:
            self.transitions.labels(self.stage, transition).inc()
            log.warning(
                "backpressure: %s %s (lag of %s is %d; marks %d/%d)",
                transition,
                sorted(self.entry),
                self.edge.group,
                self.signal.lag,
                self.settings.backpressure.high,
                self.settings.backpressure.low,
            )
        await self._apply()
        self._write_state()

    def _entry_partitions(self) -> list[Any]:
        consumer = self.app.consumer
        return [tp for tp in consumer.assignment() if tp.topic in self.entry]

    def taken(self, topic: str, partition: int, offset: int) -> None:
        """Record the last entry record the stage took, for the seek on resume."""
        self.last_taken[(topic, partition)] = offset

    def track(self, partition: int, key: bytes, *, open_: bool) -> None:
        """Count work in flight (for the order stage: placed, not yet decided) per partition.

        In-flight work is what can still reach the downstream topics after a pause, so it is
        the overshoot term of the bound and is exported as a gauge. (Capping it by pausing
        entry partitions from here was tried: pausing and resuming on every few records
        stalled faust-streaming's fetcher, so the cap is the stream buffer instead.)
        """
        pending = self.inflight.setdefault(partition, set())
        if open_:
            pending.add(key)
        else:
            pending.discard(key)
        self.inflight_gauge.set(sum(len(keys) for keys in self.inflight.values()))

    def _desired(self, tps: list[Any]) -> set[Any]:
        if not self.settings.backpressure.enabled:
            return set()
        return set(tps) if self.signal.state.paused or not self.measured else set()

    def on_assigned(self) -> None:
        """After a rebalance (Faust has paused everything, recovery will resume it).

        The resume guard goes in before Faust's resume, so a worker that joins while the
        downstream lags never takes entry work; offsets taken under the old assignment
        no longer say where to resume.
        """
        self._guard_resumes()
        self.last_taken.clear()
        self.paused_tps = set()

    async def _sync(self) -> None:
        """Make the consumer's paused entry partitions match the decision.

        On resume each partition is sought back to just after the last record the stage
        took from it (recorded by `taken`; Faust's own read offset means "next" after a
        seek and "last" otherwise, so it cannot be trusted for this). faust-streaming drops
        records it had already fetched for a partition that got paused, and would later
        treat the hole as a gap to commit past: without the seek, they would be lost.
        """
        tps = self._entry_partitions()
        desired = self._desired(tps)
        if desired:
            self.app.consumer.pause_partitions(desired)
        released = {tp for tp in tps if tp not in desired and tp in self.paused_tps}
        self.paused_tps = desired
        if released:
            consumer: Any = self.app.consumer  # Faust's committed offsets are not in its interface
            for tp in released:
                last = self.last_taken.get((tp.topic, tp.partition))
                target = last + 1 if last is not None else consumer._committed_offset.get(tp)
                if target is not None:
                    await consumer.seek(tp, target)
            consumer.resume_partitions(released)
        self.paused_gauge.set(len(desired))

    async def _apply(self) -> None:
        now = time.monotonic()
        if self.signal.state.paused and self.paused_since is None:
            self.paused_since = now
        elif not self.signal.state.paused and self.paused_since is not None:
            self.seconds.inc(now - self.paused_since)
            self.paused_seconds += now - self.paused_since
            self.paused_since = None
        await self._sync()

    def state(self) -> dict[str, Any]:
        paused = self.signal.state.paused
        return {
            "stage": self.stage,
            "watching": self.settings.group(self.edge.group),
            "paused": paused,
            "lag": self.signal.lag,
            "high": self.settings.backpressure.high,
            "low": self.settings.backpressure.low,
            "paused_partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in self.paused_tps),
            "in_flight": sum(len(keys) for keys in self.inflight.values()),
            # the last entry record taken per partition (a drained worker's hand-over point)
            "last_taken": {f"{t}[{p}]": offset for (t, p), offset in self.last_taken.items()},
            "committed": self._committed(),
            "transitions": self.signal.state.transitions,
            "updated_at": int(time.time() * 1000),
        }

    def _committed(self) -> dict[str, int | None]:
        """This worker's committed offset for each entry partition it took records from."""
        consumer: Any = self.app.consumer  # Faust's bookkeeping is not in its interface
        offsets = getattr(consumer, "_committed_offset", {})
        return {
            f"{t}[{p}]": next((o for tp, o in offsets.items() if tp == (t, p)), None)
            for t, p in self.last_taken
        }

    @property
    def state_file(self) -> Path:
        """In the worker's directory, which its worker sets at start (it follows the web port)."""
        return Path(self.app.conf.datadir) / "backpressure.json"

    def _write_state(self) -> None:
        """Leave the decision where `sluice lag` can show it (atomically replaced)."""
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state()))
            tmp.replace(self.state_file)
        except OSError as exc:
            log.warning("backpressure: cannot write %s: %s", self.state_file, exc)


def install(
    app: faust.App, settings: Settings, edge: Edge, entry_topics: list[str], metrics: StageMetrics
) -> Controller:
    """Run a controller in `app` (with lag backpressure off it still bounds in-flight work)."""
    controller = Controller(app, settings, edge, entry_topics, metrics=metrics)

    @app.timer(settings.backpressure.interval_s)  # type: ignore[untyped-decorator]
    async def backpressure_tick() -> None:
        await controller.tick()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def backpressure_on_assigned(_app: Any, *_args: Any, signal: Any, **_: Any) -> None:
        controller.on_assigned()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def backpressure_final_state(_app: Any, *_args: Any, signal: Any, **_: Any) -> None:
        controller._write_state()  # after the final commit: what this worker handed over

    return controller
