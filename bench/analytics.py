"""Analytics stage throughput: the Faust stage against a bare aiokafka loop folding the same
windows.

Each round makes fresh topics holding a backlog of N events of each source kind (orders
placed, orders confirmed, notification results: 3N events, Avro-encoded), starts the
contender on them and times it from its first consumed event to its last (the Faust
worker's count is read from its /metrics every 20 ms):

  (a) one `sluice worker analytics` (Faust: the `partials` table with its changelog,
      partials published every second, the merge agent, at-least-once)
  (b) a bare aiokafka loop in this process: the same decode, the same
      `pipelines.stages.windows` folding per partition and window, with the same
      applied-offset check, into a plain dict, and changed partials published every
      second (no table, no changelog, no merge, no crash safety)

Printed: events/s (medians, ratio) and the CPU per event of the process doing the work.

    python -m bench.analytics [--events 4000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Producer

from bench.common import broker, drop_topics, report, rounds
from pipelines import admin
from pipelines.catalog import APP_IDS
from pipelines.runner import Fleet
from pipelines.serde import serde_for
from pipelines.settings import BackpressureSettings, Settings
from pipelines.stages import windows
from producers.generator import GeneratorConfig, OrderGenerator

SCHEMAS = {
    "orders.placed": "sluice.orders.OrderPlaced",
    "orders.confirmed": "sluice.orders.OrderConfirmed",
    "notifications.results": "sluice.notifications.NotificationResult",
}
CPU: dict[str, list[float]] = {}  # contender -> CPU seconds per event, per round
TICK = os.sysconf("SC_CLK_TCK")


def _settings(bootstrap: str, tmp: Path) -> Settings:
    run = uuid.uuid4().hex[:6]
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"ba{run}.",
        data_dir=tmp / run,
        backpressure=BackpressureSettings(enabled=False),
    )
    admin.ensure_topics(settings)
    return settings


def _events(count: int) -> list[tuple[str, bytes, dict[str, Any]]]:
    """`count` orders placed, the same orders confirmed, and a notification result each."""
    generator = OrderGenerator(GeneratorConfig(seed=11, invalid_fraction=0.0))
    out: list[tuple[str, bytes, dict[str, Any]]] = []
    for n in range(count):
        order = generator.make(n)
        key = order["order_id"].encode()
        out.append(("orders.placed", key, order))
        confirmed = {k: order[k] for k in ("order_id", "customer_id", "currency", "lines")}
        confirmed |= {
            "total_cents": order["total_cents"],
            "payment_id": f"pay-{n}",
            "placed_at": order["placed_at"],
            "confirmed_at": order["placed_at"] + 40,
        }
        out.append(("orders.confirmed", key, confirmed))
        result = {
            "notification_id": f"{order['order_id']}:order_confirmed:EMAIL",
            "order_id": order["order_id"],
            "channel": "EMAIL",
            "status": "DELIVERED",
            "attempts": 1,
            "error": None,
            "provider_message_id": f"m-{n}",
            "requested_at": order["placed_at"] + 50,
            "completed_at": order["placed_at"] + 90,
        }
        out.append(("notifications.results", result["notification_id"].encode(), result))
    return out


def _produce(settings: Settings, events: list[tuple[str, bytes, dict[str, Any]]]) -> None:
    serde = serde_for(settings)
    producer = Producer(settings.confluent_producer(**{"linger.ms": 5}))
    for logical, key, record in events:
        topic = settings.topic(logical)
        producer.produce(topic, serde.encode(SCHEMAS[logical], record, topic=topic), key)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("the backlog was not acknowledged within 60 s")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _child(pid: int) -> int:
    """The Faust process `sluice worker` runs."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("sluice worker started no Faust process")


def _consumed(worker: Any) -> float:
    try:
        return worker.metric("sluice_events_in_total")
    except OSError:  # its web server is not up yet
        return 0.0


def faust_stage(bootstrap: str, count: int, tmp: Path, label: str) -> float:
    settings = _settings(bootstrap, tmp)
    events = _events(count)
    _produce(settings, events)
    fleet = Fleet(settings, tmp / "logs")
    try:
        worker = fleet.start("analytics")
        child = _child(worker.proc.pid)
        deadline = time.monotonic() + 600
        first = 0.0
        while not first:
            first = _consumed(worker)
            if time.monotonic() > deadline:
                raise TimeoutError("the analytics worker consumed nothing")
            time.sleep(0.02)
        cpu, begin = _cpu_s(child), time.monotonic()
        while _consumed(worker) < len(events):
            if time.monotonic() > deadline:
                raise TimeoutError("the analytics worker did not consume the backlog")
            time.sleep(0.02)
        elapsed = time.monotonic() - begin
        CPU.setdefault(label, []).append((_cpu_s(child) - cpu) / (len(events) - first))
        return (len(events) - first) / elapsed
    finally:
        notes = fleet.stop_all()
        if notes:
            print("  note:", "; ".join(notes))
        drop_topics(settings)


def bare_loop(bootstrap: str, count: int, tmp: Path, label: str) -> float:
    settings = _settings(bootstrap, tmp)
    events = _events(count)
    _produce(settings, events)
    loop = BareLoop(settings, len(events))
    thread = threading.Thread(target=lambda: asyncio.run(loop.run()))
    thread.start()
    try:
        if not loop.done.wait(600):
            raise TimeoutError("the bare loop did not consume the backlog")
        CPU.setdefault(label, []).append(loop.cpu_s / len(events))
        return len(events) / loop.elapsed
    finally:
        loop.stop.set()
        thread.join(timeout=30)
        drop_topics(settings)


class BareLoop:
    """The analytics fold without Faust: one consumer, one producer, a dict of partials."""

    def __init__(self, settings: Settings, expected: int) -> None:
        self.settings, self.expected = settings, expected
        self.serde = serde_for(settings)
        self.config = settings.analytics
        self.partials: dict[str, dict[str, Any]] = {}
        self.dirty: dict[str, dict[str, Any]] = {}
        self.seen = 0
        self.cpu_s = self.elapsed = 0.0
        self.done, self.stop = threading.Event(), threading.Event()

    async def run(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            *(s.topic(t) for t in windows.SOURCES),
            **s.aiokafka(group_id=s.group("bare-analytics"), auto_offset_reset="earliest"),
        )
        producer = AIOKafkaProducer(**s.aiokafka(acks="all", linger_ms=5))
        partials_topic = s.topic(f"{APP_IDS['analytics']}-partials")
        await consumer.start()
        await producer.start()
        started = begin = 0.0
        published = time.monotonic()
        try:
            while not self.stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                if batch and not begin:
                    started, begin = time.thread_time(), time.monotonic()
                for tp, records in batch.items():
                    topic = s.logical_topic(tp.topic)
                    for record in records:
                        self.fold(topic, record)
                if time.monotonic() - published >= 1.0 or self.seen >= self.expected:
                    published = time.monotonic()
                    for message in self.dirty.values():
                        value = json.dumps(message, sort_keys=True).encode()
                        await producer.send(
                            partials_topic, value, key=message["window_key"].encode()
                        )
                    self.dirty.clear()
                if self.seen >= self.expected and not self.done.is_set():
                    self.cpu_s = time.thread_time() - started
                    self.elapsed = time.monotonic() - begin
                    self.done.set()
        finally:
            await consumer.stop()
            await producer.stop()

    def fold(self, topic: str, record: Any) -> None:
        self.seen += 1
        value = self.serde.decode(record.value, SCHEMAS[topic])
        if windows.unusable_time(topic, value) is not None:
            return
        event_ms = int(value[windows.EVENT_TIME[topic]])
        late = windows.is_late(record.timestamp, event_ms, self.config)
        for c in windows.contributions(topic, value, self.config):
            key = f"{c.window_key}#{record.partition}"
            entry = self.partials.get(key) or {"partial": windows.empty(), "applied": {}}
            if entry["applied"].get(topic, -1) >= record.offset:
                continue
            entry = {
                "partial": windows.add(entry["partial"], c, late),
                "applied": {**entry["applied"], topic: record.offset},
            }
            self.partials[key] = entry
            self.dirty[key] = {
                "window_key": c.window_key,
                "size_ms": c.size_ms,
                "partition": record.partition,
                "partial": entry["partial"],
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=8000, help="Orders per round (x3 events).")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    a = "(a) Faust analytics worker"
    b = "(b) bare aiokafka fold"
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="sluice-analytics-") as tmp:
        root = Path(tmp)
        results = rounds(
            {
                a: lambda: faust_stage(bootstrap, args.events, root, a),
                b: lambda: bare_loop(bootstrap, args.events, root, b),
            },
            args.repeats,
        )
    report(f"Analytics: {3 * args.events:,} events (3 kinds), 6 partitions", results, a)
    for name, values in CPU.items():
        print(f"  CPU per event, {name}: {statistics.median(values) * 1e6:,.0f} µs")


if __name__ == "__main__":
    main()
