"""The intake's Prometheus metrics, in the stages' pattern: one registry per process.

Published records count under the stages' own `sluice_events_out{stage="intake"}`, so a
dashboard adds the intake to the pipeline without special cases; the HTTP side adds
request counts and latency per route and status, and gauges for backpressure and the
in-memory stores, read from the live objects at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from pipelines.runtime.faustapp import StageMetrics

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class IntakeMetrics:
    """Counters, a latency histogram and gauges of one intake process."""

    def __init__(self) -> None:
        self.stage = StageMetrics("intake")
        registry = self.stage.registry
        self.requests = Counter(
            "sluice_intake_requests",
            "HTTP requests answered",
            ["route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "sluice_intake_request_seconds",
            "Time to answer one HTTP request",
            ["route"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.publish_failures = Counter(
            "sluice_intake_publish_failures",
            "Orders the broker did not acknowledge (answered 503)",
            registry=registry,
        )
        self.replays = Counter(
            "sluice_intake_idempotent_replays",
            "Requests answered from an Idempotency-Key already seen",
            registry=registry,
        )
        self.disconnects = Counter(
            "sluice_intake_client_disconnects",
            "Requests whose client hung up before the answer (no status counted)",
            registry=registry,
        )
        self.transitions = Counter(
            "sluice_intake_backpressure_transitions",
            "Backpressure pauses and resumes",
            ["transition"],
            registry=registry,
        )
        self._gauges: list[tuple[Gauge, Callable[[], float]]] = []
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read from `read()` at every scrape."""
        self._gauges.append((Gauge(name, doc, registry=self.stage.registry), read))

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one answer (label children cached: this runs for every request)."""
        children = self._children.get((route, status))
        if children is None:
            children = (self.requests.labels(route, str(status)), self.latency.labels(route))
            self._children[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def published(self) -> None:
        self.stage.sent("orders.placed")

    def exposition(self) -> bytes:
        for gauge, read in self._gauges:
            gauge.set(read())
        return self.stage.exposition()
