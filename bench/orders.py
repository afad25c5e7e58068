"""Order stage throughput and latency: the Faust stage against a bare aiokafka loop.

Throughput: the same backlog of N orders (and the same seeded stock) is drained by
  (a) one `sluice worker orders` process (Faust, tables with changelogs, at-least-once)
  (b) a bare aiokafka consume -> saga/stock -> produce loop in one process, running the
      same pure saga and stock functions and the same Avro encode/decode, with plain
      dicts for state (no changelog, no crash safety)
each on its own topic prefix, measured from first record to the N-th terminal event.

Latency: orders produced at a fixed rate (default 500/s) into the Faust stage (workers as
given), p50/p99 of placed_at -> confirmed_at/rejected_at.

    python -m bench.orders [--orders 5000] [--repeats 2] [--rate 500] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, TopicPartition

from bench.common import broker, report, rounds
from pipelines import admin, domain
from pipelines.runner import Fleet
from pipelines.serde import SingleObjectSerde
from pipelines.settings import BackpressureSettings, Settings
from pipelines.stages import saga, stock
from pipelines.stats import Reservoir
from producers.generator import GeneratorConfig
from producers.inventory import seed_inventory
from producers.orders import OrderRun, produce_orders

OUTCOMES = ("orders.confirmed", "orders.rejected")
# No notification workers run here, so their lag only grows: with backpressure on, the
# order stage would pause itself at the high mark and a long run would never end.
NO_BACKPRESSURE = BackpressureSettings(enabled=False)


def _prepared(bootstrap: str, orders: int, tmp: Path) -> Settings:
    """Fresh topics with seeded stock and a backlog of `orders` orders."""
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"b{uuid.uuid4().hex[:6]}.",
        data_dir=tmp / uuid.uuid4().hex[:6],
        backpressure=NO_BACKPRESSURE,
    )
    admin.ensure_topics(settings)
    seed_inventory(settings, domain.DEFAULT_SKUS, scale=50)
    produce_orders(settings, OrderRun(count=orders, generator=GeneratorConfig(seed=9)))
    return settings


def _ended(settings: Settings) -> int:
    consumer = Consumer(settings.confluent(**{"group.id": "bench-watch"}))
    try:
        total = 0
        for name in OUTCOMES:
            topic = settings.topic(name)
            for p in range(settings.partitions):
                total += consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        return total
    finally:
        consumer.close()


def _wait_ended(settings: Settings, count: int, timeout: float = 600) -> float:
    started = time.monotonic()
    while _ended(settings) < count:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"fewer than {count} outcomes after {timeout:.0f}s")
        time.sleep(0.2)
    return time.monotonic()


def faust_stage(bootstrap: str, orders: int, tmp: Path) -> float:
    settings = _prepared(bootstrap, orders, tmp)
    fleet = Fleet(settings, tmp / "logs")
    try:
        worker = fleet.start("orders")
        started = time.monotonic()
        worker.wait_ready()
        return orders / (_wait_ended(settings, orders) - started)
    finally:
        fleet.stop_all()
        _cleanup(settings)


def bare_loop(bootstrap: str, orders: int, tmp: Path) -> float:
    settings = _prepared(bootstrap, orders, tmp)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(BareLoop(settings, stop).run()))
    started = time.monotonic()
    thread.start()
    try:
        return orders / (_wait_ended(settings, orders) - started)
    finally:
        stop.set()
        thread.join(timeout=30)
        _cleanup(settings)


class BareLoop:
    """The order stage without Faust: one consumer, one producer, dicts for state."""

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.settings, self.stop = settings, stop
        self.serde = SingleObjectSerde()
        self.orders: dict[str, Any] = {}
        self.stock: dict[str, Any] = {}
        self.ended: set[str] = set()
        self.config = saga.SagaConfig()

    async def run(self) -> None:
        s = self.settings
        topics = [
            s.topic(t) for t in ("orders.placed", "inventory.reservations", "inventory.results")
        ]
        consumer = AIOKafkaConsumer(
            *topics, **s.aiokafka(group_id=s.group("bare"), auto_offset_reset="earliest")
        )
        self.producer = AIOKafkaProducer(**s.aiokafka(acks="all", linger_ms=5))
        await consumer.start()
        await self.producer.start()
        try:
            while not self.stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                for tp, records in batch.items():
                    for record in records:
                        await self.handle(s.logical_topic(tp.topic), record)
        finally:
            await consumer.stop()
            await self.producer.stop()

    async def handle(self, topic: str, record: Any) -> None:
        source = (topic, record.partition, record.offset)
        if topic == "inventory.reservations":
            request = self.serde.decode(record.value, "sluice.inventory.ReservationRequested")
            skey, rkey = stock.stock_key(request["sku"]), stock.request_key(request)
            step = stock.handle(
                request,
                self.stock.get(skey),
                self.stock.get(rkey),
                offset=record.offset,
                now_ms=int(time.time() * 1000),
            )
            self.stock.update(step.writes)
            if step.result is not None:
                await self.send(
                    "inventory.results",
                    step.result["order_id"],
                    "sluice.inventory.ReservationResult",
                    step.result,
                )
            return
        placed = topic == "orders.placed"
        name = "sluice.orders.OrderPlaced" if placed else "sluice.inventory.ReservationResult"
        event = self.serde.decode(record.value, name)
        key = event["order_id"]
        fn = saga.on_placed if placed else saga.on_result
        effects = fn(
            self.orders.get(key),
            event,
            terminal=key in self.ended,
            source=source,
            now_ms=int(time.time() * 1000),
            config=self.config,
        )
        await self.apply(key, effects)

    async def apply(self, key: str, effects: saga.Effects) -> None:
        for request in effects.reservations:
            await self.send(
                "inventory.reservations",
                request["sku"],
                "sluice.inventory.ReservationRequested",
                request,
            )
        for note in effects.notifications:
            await self.send(
                f"notifications.{note['channel'].lower()}",
                note["notification_id"],
                "sluice.notifications.NotificationRequested",
                note,
            )
        if effects.state is not None:
            self.orders[key] = effects.state
        if effects.status is not None:
            await self.send("orders.status", key, "sluice.orders.OrderStatus", effects.status)
        if effects.outcome is not None:
            kind, outcome = effects.outcome
            schema = (
                "sluice.orders.OrderConfirmed"
                if kind == "confirmed"
                else "sluice.orders.OrderRejected"
            )
            self.ended.add(key)
            await self.send(f"orders.{kind}", key, schema, outcome)

    async def send(self, topic: str, key: str, schema: str, record: dict[str, Any]) -> None:
        physical = self.settings.topic(topic)
        await self.producer.send(
            physical, key=key.encode(), value=self.serde.encode(schema, record, topic=physical)
        )


def latency_run(
    bootstrap: str, rate: float, seconds: float, workers: int, tmp: Path
) -> dict[str, float | None]:
    """p50/p99 placed -> terminal at a fixed rate through the Faust stage."""
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"l{uuid.uuid4().hex[:6]}.",
        data_dir=tmp / "latency",
        backpressure=NO_BACKPRESSURE,
    )
    admin.ensure_topics(settings)
    seed_inventory(settings, domain.DEFAULT_SKUS, scale=50)
    fleet = Fleet(settings, tmp / "latency-logs")
    count = int(rate * seconds)
    try:
        for _ in range(workers):
            fleet.start("orders")
        for worker in fleet.workers:
            worker.wait_ready()
        produce_orders(
            settings, OrderRun(count=count, rate=rate, generator=GeneratorConfig(seed=10))
        )
        _wait_ended(settings, count)
        return _latencies(settings)
    finally:
        fleet.stop_all()
        _cleanup(settings)


def _latencies(settings: Settings) -> dict[str, float | None]:
    from consumers.tail import StartAt, read

    sample = Reservoir()
    for name in OUTCOMES:
        for row in read(settings, name, StartAt("beginning")):
            value = row["value"]
            sample.add((value.get("confirmed_at") or value["rejected_at"]) - value["placed_at"])
    return {
        "p50_ms": sample.quantile(0.5),
        "p99_ms": sample.quantile(0.99),
        "orders": float(sample.count),
    }


def _cleanup(settings: Settings) -> None:
    with contextlib.suppress(Exception):
        names = [t for t in admin.list_topics(settings) if t.startswith(settings.topic_prefix)]
        admin.delete_topics(settings, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--latency-workers", type=int, default=2)
    args = parser.parse_args()
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        root = Path(tmp)
        results = rounds(
            {
                "(a) sluice orders stage (1 Faust worker)": lambda: faust_stage(
                    bootstrap, args.orders, root
                ),
                "(b) bare aiokafka loop (same logic, no Faust)": lambda: bare_loop(
                    bootstrap, args.orders, root
                ),
            },
            args.repeats,
        )
        report(
            f"Order stage: drain {args.orders:,} orders, 6 partitions",
            results,
            "(a) sluice orders stage (1 Faust worker)",
            unit="orders/s",
        )
        lat = latency_run(bootstrap, args.rate, args.seconds, args.latency_workers, root)
        print(
            f"\nLatency at {args.rate:.0f} orders/s for {args.seconds:.0f}s with "
            f"{args.latency_workers} workers: placed -> terminal p50 {lat['p50_ms']} ms, "
            f"p99 {lat['p99_ms']} ms over {lat['orders']:.0f} orders"
        )


if __name__ == "__main__":
    main()
