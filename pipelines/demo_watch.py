"""What the demo watches: the pipeline's outputs as they arrive, lag, and a live view.

A `Follower` thread tails the output topics (orders.confirmed, orders.rejected,
notifications.results) from the beginning with a plain assigned consumer (no group, so it
never shows up in lag), decoding by schema and keeping one entry per order id and
notification id: duplicates would be visible as counts that do not add up.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from rich.table import Table

from pipelines import lag
from pipelines.catalog import APP_IDS, by_name
from pipelines.errors import RecordError
from pipelines.serde import serde_for
from pipelines.settings import Settings
from pipelines.topology import STAGES

OUTPUTS = ("orders.confirmed", "orders.rejected", "notifications.results")
#: Each stage's catalog inputs, whose lag the live view shows.
STAGE_INPUTS = {s.name: s.inputs for s in STAGES if s.app_id}


@dataclass
class Tally:
    """Terminal events seen so far, one per id (a second one is counted as a duplicate)."""

    ended: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0
    undecodable: int = 0

    def add(self, topic: str, value: dict[str, Any]) -> None:
        if topic == "notifications.results":
            key, seen = value["notification_id"], self.results
        else:
            key, seen = value["order_id"], self.ended
            value = {"topic": topic, **value}
        if key in seen:
            self.duplicates += 1
        else:
            seen[key] = value


class Follower(threading.Thread):
    """Tails the output topics into a `Tally` until `stop()`."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="sluice-demo-follower", daemon=True)
        self.settings = settings
        self.tally = Tally()
        self.lock = threading.Lock()
        self._stop_flag = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        settings = self.settings
        consumer = Consumer(
            settings.confluent(**{"group.id": "sluice-demo-follower", "enable.auto.commit": False})
        )
        schemas = {t: by_name()[t].value_schema for t in OUTPUTS}
        logical = {settings.topic(t): t for t in OUTPUTS}
        serde = serde_for(settings)
        try:
            consumer.assign(
                [
                    TopicPartition(settings.topic(t), p, 0)
                    for t in OUTPUTS
                    for p in range(by_name()[t].partition_count(settings.partitions))
                ]
            )
            while not self._stop_flag.is_set():
                for msg in consumer.consume(500, timeout=0.5):
                    if msg.error() is None and msg.value() is not None:
                        self._apply(serde, logical[msg.topic() or ""], msg.value() or b"", schemas)
        except Exception as exc:  # surfaced by the demo, which decides what to do
            self.error = str(exc)
        finally:
            consumer.close()

    def _apply(self, serde: Any, topic: str, raw: bytes, schemas: dict[str, Any]) -> None:
        try:
            value = serde.decode(raw, schemas[topic])
        except RecordError:
            with self.lock:
                self.tally.undecodable += 1
            return
        with self.lock:
            self.tally.add(topic, value)

    def counts(self) -> tuple[int, int, int]:
        """(orders ended, notification results, duplicates) right now."""
        with self.lock:
            return len(self.tally.ended), len(self.tally.results), self.tally.duplicates

    def stop(self) -> None:
        self._stop_flag.set()
        self.join(timeout=10)


def group_lags(settings: Settings) -> dict[str, int]:
    """Total lag of each stage's group on its inputs (one admin round trip per group)."""
    out: dict[str, int] = {}
    for stage, inputs in STAGE_INPUTS.items():
        group = settings.group(APP_IDS[stage])
        try:
            rows = lag.group_lag(settings, group, [settings.topic(t) for t in inputs])
            out[stage] = lag.total(rows)
        except Exception:  # a view must not kill the run; the next refresh tries again
            out[stage] = -1
    return out


@dataclass
class Snapshot:
    """One refresh of the live view."""

    elapsed_s: float
    produced: int
    orders: int
    ended: int
    expected_notifications: int
    results: int
    lags: dict[str, int]
    paused_partitions: int
    throttled_s: float


def view(s: Snapshot) -> Table:
    """The live table: progress of each stage, lag per group, backpressure."""
    table = Table(title=f"sluice demo  {s.elapsed_s:5.0f}s", show_header=True, expand=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("orders produced", f"{s.produced:,} / {s.orders:,}")
    table.add_row("orders ended", f"{s.ended:,} / {s.produced:,}")
    table.add_row("notification results", f"{s.results:,} / {s.expected_notifications:,}")
    for stage, value in s.lags.items():
        table.add_row(f"lag {stage}", "?" if value < 0 else f"{value:,}")
    table.add_row("paused partitions (orders)", str(s.paused_partitions))
    table.add_row("producer throttled", f"{s.throttled_s:.1f}s")
    return table


def line(s: Snapshot) -> str:
    """The same as one plain line, for logs and CI (no terminal)."""
    lags = " ".join(f"{k}={v}" for k, v in s.lags.items())
    return (
        f"[{s.elapsed_s:5.0f}s] produced {s.produced}/{s.orders}, ended {s.ended}, "
        f"notifications {s.results}/{s.expected_notifications}, lag {lags}, "
        f"paused {s.paused_partitions}, throttled {s.throttled_s:.1f}s"
    )
