"""Order stage throughput and latency: the Faust stage against a bare aiokafka loop.

Throughput: the same backlog of N orders (and the same seeded stock) is drained by
  (a) one `sluice worker orders` process (Faust, tables with changelogs, at-least-once)
  (b) a bare aiokafka consume -> saga/stock -> produce loop in one process, running the
      same pure saga and stock functions and the same Avro encode/decode, with plain
      dicts for state (no changelog, no crash safety), and the same batched records
      (one stock request record per SKU partition and poll, one result record per
      order partition and poll)
each on its own topic prefix, measured from the first to the N-th terminal event (by the
times the stage stamps on them: start-up and recovery are not counted).
After each drained run the records consumed and produced per order are counted by topic
from the topics' end offsets before and after it (`--records` prints them).

Latency: orders produced at a fixed rate (default 500/s) into the Faust stage (workers as
given), p50/p99 of placed_at -> confirmed_at/rejected_at.

    python -m bench.orders [--orders 5000] [--repeats 2] [--rate 500] [--seconds 20]
                           [--store rocksdb://|memory://] [--no-latency]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, TopicPartition

from bench.common import broker, drop_topics, report, rounds
from pipelines import admin, domain
from pipelines.catalog import APP_IDS, STOCK_REQUESTS, STOCK_RESULTS
from pipelines.runner import Fleet
from pipelines.serde import SingleObjectSerde
from pipelines.settings import BackpressureSettings, Settings
from pipelines.stages import saga, stock
from pipelines.stages.homing import home_partition
from pipelines.stats import Reservoir
from producers.generator import GeneratorConfig, OrderGenerator
from producers.inventory import seed_inventory
from producers.orders import OrderRun, produce_orders

OUTCOMES = ("orders.confirmed", "orders.rejected")
# No notification workers run here, so their lag only grows: with backpressure on, the
# order stage would pause itself at the high mark and a long run would never end.
NO_BACKPRESSURE = BackpressureSettings(enabled=False)
WARMUP_S = 2.0  # latency run: seconds of orders before the measured ones
FAUST_INPUTS = (
    "orders.placed",
    "inventory.results",
    f"{APP_IDS['orders']}-placed-rekeyed",
    STOCK_RESULTS,
    "inventory.reservations",
    STOCK_REQUESTS,
)
BARE_INPUTS = ("orders.placed", "inventory.reservations", STOCK_REQUESTS, STOCK_RESULTS)


@dataclass
class Census:
    """Records per order by topic in one drained run (from end offsets before and after)."""

    orders: int
    consumed: dict[str, int] = field(default_factory=dict)
    produced: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        n = self.orders
        rows = [f"    {'topic':<34} {'consumed':>9} {'produced':>9}  (per order)"]
        for topic in sorted(self.consumed.keys() | self.produced.keys()):
            c, p = self.consumed.get(topic, 0) / n, self.produced.get(topic, 0) / n
            if c or p:
                rows.append(f"    {topic:<34} {c:>9.2f} {p:>9.2f}")
        total_c, total_p = sum(self.consumed.values()) / n, sum(self.produced.values()) / n
        rows.append(f"    {'total':<34} {total_c:>9.2f} {total_p:>9.2f}")
        return rows


CENSUS: dict[str, Census] = {}


def _end_offsets(settings: Settings) -> dict[str, int]:
    """The end offset of every topic of this run (summed over partitions), by catalog name."""
    consumer = Consumer(settings.confluent(**{"group.id": "bench-census"}))
    try:
        names = [t for t in admin.list_topics(settings) if t.startswith(settings.topic_prefix)]
        metadata = consumer.list_topics(timeout=10).topics
        ends: dict[str, int] = defaultdict(int)
        for name in names:
            for p in metadata[name].partitions if name in metadata else ():
                tp = TopicPartition(name, p)
                ends[settings.logical_topic(name)] += consumer.get_watermark_offsets(
                    tp, timeout=10
                )[1]
        return dict(ends)
    finally:
        consumer.close()


def _settled(settings: Settings, quiet_s: float = 3.0, timeout: float = 120) -> dict[str, int]:
    """End offsets once nothing has been written for `quiet_s` (a drained stage)."""
    deadline = time.monotonic() + timeout
    last, since = _end_offsets(settings), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _end_offsets(settings)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last


def _census(
    settings: Settings, orders: int, before: dict[str, int], inputs: tuple[str, ...]
) -> Census:
    after = _settled(settings)
    produced = {t: end - before.get(t, 0) for t, end in after.items() if end > before.get(t, 0)}
    consumed = {t: after.get(t, 0) for t in inputs if after.get(t, 0)}
    return Census(orders, consumed, produced)


def _prepared(bootstrap: str, orders: int, tmp: Path, store: str = "rocksdb://") -> Settings:
    """Fresh topics with seeded stock and a backlog of `orders` orders."""
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"b{uuid.uuid4().hex[:6]}.",
        data_dir=tmp / uuid.uuid4().hex[:6],
        backpressure=NO_BACKPRESSURE,
        store=store,  # type: ignore[arg-type]
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


def faust_stage(bootstrap: str, orders: int, tmp: Path, store: str = "rocksdb://") -> float:
    settings = _prepared(bootstrap, orders, tmp, store)
    fleet = Fleet(settings, tmp / "logs")
    before = _end_offsets(settings)
    try:
        worker = fleet.start("orders")
        worker.wait_ready()
        _wait_ended(settings, orders)
        rate = _drain_rate(settings)
        CENSUS.setdefault("faust", _census(settings, orders, before, FAUST_INPUTS))
        return rate
    finally:
        fleet.stop_all()
        drop_topics(settings)


def bare_loop(bootstrap: str, orders: int, tmp: Path) -> float:
    settings = _prepared(bootstrap, orders, tmp)
    before = _end_offsets(settings)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(BareLoop(settings, stop).run()))
    thread.start()
    try:
        _wait_ended(settings, orders)
        rate = _drain_rate(settings)
        CENSUS.setdefault("bare", _census(settings, orders, before, BARE_INPUTS))
        return rate
    finally:
        stop.set()
        thread.join(timeout=30)
        drop_topics(settings)


class BareLoop:
    """The order stage without Faust: one consumer, one producer, dicts for state.

    It does the stage's work in the stage's shape: each poll is a batch, whose stock
    requests go out as one record per SKU partition and whose results go out as one
    record per order partition, each order's last status once, no changelogs.
    """

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.settings, self.stop = settings, stop
        self.serde = SingleObjectSerde()
        self.orders: dict[str, Any] = {}
        self.decisions: dict[str, Any] = {}
        self.book = stock.StockBook()
        self.ended: set[str] = set()
        self.config = saga.SagaConfig(partitions=settings.partitions)

    async def run(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            *[s.topic(t) for t in BARE_INPUTS],
            **s.aiokafka(group_id=s.group("bare"), auto_offset_reset="earliest"),
        )
        self.producer = AIOKafkaProducer(**s.aiokafka(acks="all", linger_ms=5))
        await consumer.start()
        await self.producer.start()
        try:
            while not self.stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                out = _Out()
                for tp, records in batch.items():
                    for record in records:
                        self.handle(s.logical_topic(tp.topic), record, out)
                await self.flush(out)
        finally:
            await consumer.stop()
            await self.producer.stop()

    def handle(self, topic: str, record: Any, out: _Out) -> None:
        now = int(time.time() * 1000)
        if topic == "inventory.reservations":  # restocks, v1
            v1 = self.serde.decode(record.value, "sluice.inventory.ReservationRequested")
            self.decide(stock.as_group(v1), now, out)
        elif topic == STOCK_REQUESTS:
            body = self.serde.decode(record.value, "sluice.inventory.StockRequests")
            for request in body["requests"]:
                self.decide(request, now, out)
        elif topic == STOCK_RESULTS:
            body = self.serde.decode(record.value, "sluice.inventory.StockResults")
            for index, result in enumerate(body["results"]):
                source = (topic, record.partition, record.offset, index)
                self.step(result["order_id"], saga.on_result, result, source, now=now, out=out)
        else:
            order = self.serde.decode(record.value, "sluice.orders.OrderPlaced")
            source = (topic, record.partition, record.offset)
            self.step(order["order_id"], saga.on_placed, order, source, now=now, out=out)

    def decide(self, request: dict[str, Any], now: int, out: _Out) -> None:
        key = stock.request_key(request)
        step = stock.handle(request, self.book, self.decisions.get(key), now_ms=now)
        if step.decision is not None:
            self.decisions[key] = step.decision
        if step.result is not None:
            home = home_partition(request["order_id"].encode(), self.settings.partitions)
            out.results[home].append(step.result)

    def step(
        self, key: str, fn: Any, event: Any, source: saga.Source, *, now: int, out: _Out
    ) -> None:
        effects = fn(
            self.orders.get(key),
            event,
            terminal=key in self.ended,
            source=source,
            now_ms=now,
            config=self.config,
        )
        for request in effects.reservations:
            out.requests[request["partition"]].append(request)
        out.notes.extend(effects.notifications)
        if effects.state is not None:
            self.orders[key] = effects.state
        if effects.status is not None:
            out.statuses[key] = effects.status
        if effects.outcome is not None:
            self.ended.add(key)
            out.outcomes.append((key, *effects.outcome))

    async def flush(self, out: _Out) -> None:
        for p, requests in out.requests.items():
            await self.send(
                STOCK_REQUESTS, None, "sluice.inventory.StockRequests", {"requests": requests}, p
            )
        for p, results in out.results.items():
            await self.send(
                STOCK_RESULTS, None, "sluice.inventory.StockResults", {"results": results}, p
            )
        for note in out.notes:
            await self.send(
                f"notifications.{note['channel'].lower()}",
                note["notification_id"],
                "sluice.notifications.NotificationRequested",
                note,
            )
        for key, status in out.statuses.items():
            await self.send("orders.status", key, "sluice.orders.OrderStatus", status)
        for key, kind, outcome in out.outcomes:
            schema = (
                "sluice.orders.OrderConfirmed"
                if kind == "confirmed"
                else "sluice.orders.OrderRejected"
            )
            await self.send(f"orders.{kind}", key, schema, outcome)

    async def send(
        self,
        topic: str,
        key: str | None,
        schema: str,
        record: dict[str, Any],
        partition: int | None = None,
    ) -> None:
        physical = self.settings.topic(topic)
        await self.producer.send(
            physical,
            key=None if key is None else key.encode(),
            value=self.serde.encode(schema, record, topic=physical),
            partition=partition,
        )


@dataclass
class _Out:
    """What one poll makes the bare loop send."""

    requests: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    results: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    notes: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    outcomes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


def latency_run(  # noqa: PLR0917
    bootstrap: str,
    rate: float,
    seconds: float,
    workers: int,
    tmp: Path,
    store: str,
    warmup_s: float = WARMUP_S,
) -> dict[str, float | None]:
    """p50/p99 placed -> terminal at a fixed rate through the Faust stage.

    One producer sends every order. Its first ones wait in its queue for what a new
    producer does once (connections, its idempotence id: about 0.5 s here, stamped
    into their placed_at), which a long-lived producer such as the intake's never pays
    again. The first `warmup_s` of orders are therefore not counted; the figure is the
    stage's steady state, and the cold start is reported beside it.
    """
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"l{uuid.uuid4().hex[:6]}.",
        data_dir=tmp / "latency",
        backpressure=NO_BACKPRESSURE,
        store=store,  # type: ignore[arg-type]
    )
    admin.ensure_topics(settings)
    seed_inventory(settings, domain.DEFAULT_SKUS, scale=50)
    fleet = Fleet(settings, tmp / "latency-logs")
    warm, count = int(rate * warmup_s), int(rate * seconds)
    try:
        for _ in range(workers):
            fleet.start("orders")
        fleet.wait_settled()
        generator = GeneratorConfig(seed=10)
        produce_orders(settings, OrderRun(count=warm + count, rate=rate, generator=generator))
        _wait_ended(settings, warm + count)
        ids = OrderGenerator(generator)
        warm_ids = {ids.order_id(n) for n in range(warm)}
        measured = _latencies(settings, lambda order_id: order_id not in warm_ids)
        cold = _latencies(settings, warm_ids.__contains__) if warm else {}
        return {**measured, **{f"cold_{k}": v for k, v in cold.items()}}
    finally:
        fleet.stop_all()
        drop_topics(settings)


def _drain_rate(settings: Settings) -> float:
    """Orders per second between the first and the last terminal event (their own times,
    stamped by the stage): start-up, recovery and the first fetch are not counted, for
    either contender."""
    from consumers.tail import StartAt, read

    times = [
        row["value"].get("confirmed_at") or row["value"]["rejected_at"]
        for name in OUTCOMES
        for row in read(settings, name, StartAt("beginning"))
    ]
    return (len(times) - 1) / max(0.001, (max(times) - min(times)) / 1000)


def _latencies(settings: Settings, counted: Callable[[str], bool]) -> dict[str, float | None]:
    """Quantiles of placed -> terminal for the orders whose id is `counted`."""
    from consumers.tail import StartAt, read

    sample = Reservoir()
    for name in OUTCOMES:
        for row in read(settings, name, StartAt("beginning")):
            value = row["value"]
            placed = value["placed_at"]
            if not counted(value["order_id"]):
                continue
            sample.add((value.get("confirmed_at") or value["rejected_at"]) - placed)
    return {
        "p50_ms": sample.quantile(0.5),
        "p90_ms": sample.quantile(0.9),
        "p99_ms": sample.quantile(0.99),
        "max_ms": sample.quantile(1.0),
        "orders": float(sample.count),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--latency-workers", type=int, default=2)
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=WARMUP_S,
        help="orders at the latency rate sent first and not counted (0: count from cold)",
    )
    parser.add_argument("--store", default="rocksdb://", choices=("rocksdb://", "memory://"))
    parser.add_argument("--no-latency", action="store_true", help="skip the latency run")
    parser.add_argument("--latency-only", action="store_true", help="only the latency run")
    parser.add_argument(
        "--only", choices=("faust", "bare"), help="run one contender (profiling, census)"
    )
    args = parser.parse_args()
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        root = Path(tmp)
        ours, peer = (
            "(a) sluice orders stage (1 Faust worker)",
            "(b) bare aiokafka loop (same logic)",
        )
        contenders = {
            ours: lambda: faust_stage(bootstrap, args.orders, root, args.store),
            peer: lambda: bare_loop(bootstrap, args.orders, root),
        }
        if args.only:
            contenders = {
                k: v for k, v in contenders.items() if (k == ours) == (args.only == "faust")
            }
        if not args.latency_only:
            results = rounds(contenders, args.repeats)
            report(
                f"Order stage: drain {args.orders:,} orders, 6 partitions, store {args.store}",
                results,
                ours if ours in results else peer,
                unit="orders/s",
            )
            for name, census in CENSUS.items():
                print(f"\n  Records per order, {name} (first round):")
                print("\n".join(census.lines()))
        if args.no_latency:
            return
        lat = latency_run(
            bootstrap,
            args.rate,
            args.seconds,
            args.latency_workers,
            root,
            args.store,
            args.warmup_seconds,
        )
        print(
            f"\nLatency at {args.rate:.0f} orders/s for {args.seconds:.0f}s with "
            f"{args.latency_workers} workers: placed -> terminal p50 {lat['p50_ms']} ms, "
            f"p90 {lat['p90_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms "
            f"over {lat['orders']:.0f} orders (after {args.warmup_seconds:.0f}s of warm-up)"
        )
        if args.warmup_seconds:
            print(
                f"  cold start (the first {lat['cold_orders']:.0f} orders, from a fresh "
                f"producer): p50 {lat['cold_p50_ms']} ms, p99 {lat['cold_p99_ms']} ms, "
                f"max {lat['cold_max_ms']} ms"
            )


if __name__ == "__main__":
    main()
