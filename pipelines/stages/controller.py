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
from pipelines.settings import Settings
from pipelines.stages.faustapp import StageMetrics

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
        state_file: Path,
    ) -> None:
        self.app, self.settings, self.edge = app, settings, edge
        self.entry = {settings.topic(t) for t in entry_topics}
        self.signal = LagSignal(settings, edge, settings.backpressure)
        self.state_file = state_file
        self.paused_since: float | None = None
        self.paused_seconds = 0.0
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
        self.lag_gauge = Gauge(
            "sluice_downstream_lag",
            "Lag of the downstream group",
            ["stage", "group"],
            registry=registry,
        ).labels(metrics.stage, edge.group)
        self.stage = metrics.stage

    def _guard_resumes(self) -> None:
        """Wrap the consumer's resume so Faust's own resumes skip paused entry partitions."""
        consumer = self.app.consumer
        if getattr(consumer, "_sluice_guarded", False):
            return
        original = consumer.resume_partitions

        def resume_partitions(tps: Any) -> Any:
            if self.signal.state.paused:
                tps = {tp for tp in tps if tp.topic not in self.entry}
            return original(tps)

        consumer.resume_partitions = resume_partitions  # type: ignore[method-assign]
        consumer._sluice_guarded = True  # type: ignore[attr-defined]

    async def tick(self) -> None:
        """Measure, decide, and make the consumer match the decision."""
        self._guard_resumes()
        try:
            transition = await self.signal.ameasure()
        except Exception as exc:  # the broker may be briefly away; keep the last decision
            log.warning("backpressure: cannot read the lag of %s: %s", self.edge.group, exc)
            return
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
        self._apply()
        self._write_state()

    def _entry_partitions(self) -> list[Any]:
        consumer = self.app.consumer
        return [tp for tp in consumer.assignment() if tp.topic in self.entry]

    def _apply(self) -> None:
        tps = self._entry_partitions()
        now = time.monotonic()
        if self.signal.state.paused:
            if self.paused_since is None:
                self.paused_since = now
            if tps:
                self.app.consumer.pause_partitions(tps)
            self.paused_gauge.set(len(tps))
        else:
            if self.paused_since is not None:
                self.seconds.inc(now - self.paused_since)
                self.paused_seconds += now - self.paused_since
                self.paused_since = None
                if tps:
                    self.app.consumer.resume_partitions(set(tps))
            self.paused_gauge.set(0)

    def state(self) -> dict[str, Any]:
        paused = self.signal.state.paused
        return {
            "stage": self.stage,
            "watching": self.settings.group(self.edge.group),
            "paused": paused,
            "lag": self.signal.lag,
            "high": self.settings.backpressure.high,
            "low": self.settings.backpressure.low,
            "paused_partitions": sorted(
                f"{tp.topic}[{tp.partition}]" for tp in self._entry_partitions()
            )
            if paused
            else [],
            "transitions": self.signal.state.transitions,
            "updated_at": int(time.time() * 1000),
        }

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
) -> Controller | None:
    """Run a controller in `app` when backpressure is enabled; returns it (or None)."""
    if not settings.backpressure.enabled:
        return None
    state_file = Path(app.conf.datadir) / "backpressure.json"
    controller = Controller(
        app, settings, edge, entry_topics, metrics=metrics, state_file=state_file
    )

    @app.timer(settings.backpressure.interval_s)  # type: ignore[untyped-decorator]
    async def backpressure_tick() -> None:
        await controller.tick()

    return controller
