"""The order stage on a real broker: every order ends exactly once, and stock adds up.

Each test runs `sluice worker orders` processes against its own copy of the topics, then
checks the invariants from the outside: the terminal events on orders.confirmed and
orders.rejected, and the stock levels in the inventory table's changelog.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from pipelines.settings import Settings
from producers.generator import GeneratorConfig, OrderGenerator
from producers.inventory import seed_inventory
from producers.orders import OrderRun, produce_orders
from tests.support import pipeline
from tests.support.reference import expected_outcomes

SKUS = 200


@pytest.fixture
def orders_settings(pipeline_settings: Settings) -> Settings:
    # These tests run the order stage alone: nothing consumes the notification topics, so
    # the notifications group's lag only grows and backpressure would (rightly) pause the
    # stage for good. Backpressure has its own tests with both stages running.
    off = pipeline_settings.backpressure.model_copy(update={"enabled": False})
    return pipeline_settings.model_copy(
        update={"store": "rocksdb://", "commit_interval_s": 1.0, "backpressure": off}
    )


def _ids(seed: int, count: int, start: int = 0) -> set[str]:
    gen = OrderGenerator(GeneratorConfig(seed=seed))
    return {gen.order_id(n) for n in range(start, start + count)}


def _check_invariants(settings: Settings, found: dict, ids: set[str]) -> None:
    pipeline.check_invariants(settings, found, ids, SKUS)


def test_one_worker_ends_every_order_once(orders_settings: Settings, tmp_path: Path) -> None:
    seed_inventory(orders_settings, SKUS)
    run = OrderRun(count=2000, generator=GeneratorConfig(seed=21, invalid_fraction=0.05))
    with pipeline.workers(orders_settings, tmp_path) as group:
        group.start("orders")
        stats = produce_orders(orders_settings, run)
        assert stats.acked == 2000
        found = pipeline.wait_for_outcomes(orders_settings, _ids(21, 2000), 180, group)
        _check_invariants(orders_settings, found, _ids(21, 2000))
    reasons = Counter(e[0].get("reason", "CONFIRMED") for e in found.values())
    assert reasons["CONFIRMED"] > 0
    assert reasons["INVALID"] > 0
    assert reasons["OUT_OF_STOCK"] > 0  # the skewed demand empties the popular SKUs


@pytest.mark.slow
def test_three_workers_and_workers_joining_mid_stream(
    orders_settings: Settings, tmp_path: Path
) -> None:
    seed_inventory(orders_settings, SKUS)
    with pipeline.workers(orders_settings, tmp_path) as group:
        for _ in range(2):
            group.start("orders")
        produce_orders(
            orders_settings, OrderRun(count=1500, rate=500, generator=GeneratorConfig(seed=22))
        )
        group.start("orders")  # a third worker joins: the group rebalances mid-stream
        produce_orders(
            orders_settings,
            OrderRun(count=1500, rate=500, start_index=1500, generator=GeneratorConfig(seed=22)),
        )
        ids = _ids(22, 3000)
        found = pipeline.wait_for_outcomes(orders_settings, ids, 240, group)
        _check_invariants(orders_settings, found, ids)
        assert all(worker.alive() for worker in group.workers)


@pytest.mark.slow
@pytest.mark.chaos
def test_sigkilled_worker_resumes_on_the_others(orders_settings: Settings, tmp_path: Path) -> None:
    seed_inventory(orders_settings, SKUS)
    with pipeline.workers(orders_settings, tmp_path) as group:
        victim = group.start("orders")
        victim.wait_ready()
        group.start("orders").wait_ready()
        feeder = threading.Thread(
            target=produce_orders,
            args=(
                orders_settings,
                OrderRun(count=1500, rate=300, generator=GeneratorConfig(seed=23)),
            ),
        )
        feeder.start()
        time.sleep(2.5)  # mid-stream: the victim is busy with its partitions
        assert victim.metric("sluice_events_in_total") > 0
        victim.kill()
        feeder.join()
        produce_orders(
            orders_settings,
            OrderRun(count=500, start_index=1500, generator=GeneratorConfig(seed=23)),
        )
        group.start("orders", name=victim.name)  # restarted with its old table directory
        ids = _ids(23, 2000)
        found = pipeline.wait_for_outcomes(orders_settings, ids, 240, group)
        _check_invariants(orders_settings, found, ids)


@pytest.mark.slow
def test_duplicated_orders_never_reserve_twice(orders_settings: Settings, tmp_path: Path) -> None:
    seed_inventory(orders_settings, SKUS)
    seed_inventory(orders_settings, SKUS)  # re-seeding the same batch is a no-op
    run = OrderRun(count=5000, generator=GeneratorConfig(seed=24))
    with pipeline.workers(orders_settings, tmp_path) as group:
        group.start("orders")
        produce_orders(orders_settings, run)
        produce_orders(orders_settings, run)  # the same 5,000 orders again
        ids = _ids(24, 5000)
        found = pipeline.wait_for_outcomes(orders_settings, ids, 300, group)
        _check_invariants(orders_settings, found, ids)


def test_outcomes_match_the_reference_computation(
    orders_settings: Settings, tmp_path: Path
) -> None:
    """With stock to spare, every outcome follows from the rules alone (invariant 4)."""
    settings = orders_settings.model_copy(
        update={"orders": orders_settings.orders.model_copy(update={"decline_rate": 0.1})}
    )
    seed_inventory(settings, SKUS, batch="plenty", scale=1000)
    config = GeneratorConfig(seed=25, invalid_fraction=0.1)
    with pipeline.workers(settings, tmp_path) as group:
        group.start("orders")
        produce_orders(settings, OrderRun(count=2000, generator=config))
        found = pipeline.wait_for_outcomes(settings, _ids(25, 2000), 180, group)
    gen = OrderGenerator(config)
    expected = expected_outcomes([gen.make(n) for n in range(2000)], decline_rate=0.1)
    actual = Counter(e[0].get("reason", "CONFIRMED") for e in found.values())
    assert actual == expected
    assert expected["PAYMENT_DECLINED"] > 0
    assert expected["INVALID"] > 0


def test_poison_goes_to_the_dlq_health_metrics_and_a_clean_sigterm(
    orders_settings: Settings, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    from consumers.tail import StartAt, read

    seed_inventory(orders_settings, SKUS)
    topic = orders_settings.topic("orders.placed")
    with pipeline.workers(orders_settings, tmp_path) as group:
        worker = group.start("orders")
        health = worker.wait_ready()
        assert health["status"] == "ok"
        assert health["app"] == orders_settings.group("sluice-orders")
        producer = Producer(orders_settings.confluent_producer())
        producer.produce(topic, key=b"poison-1", value=b"\x00\x01garbage")
        producer.produce(topic, key=b"poison-2", value=b"")
        producer.produce(topic, key=b"poison-3", value=None)  # a tombstone-like null
        producer.flush(10)
        produce_orders(orders_settings, OrderRun(count=300, generator=GeneratorConfig(seed=26)))
        found = pipeline.wait_for_outcomes(orders_settings, _ids(26, 300), 120, group)
        assert len(found) == 300
        assert worker.metric("sluice_dead_letters_total") == 3
        assert worker.metric("sluice_events_in_total") >= 303
        code = worker.stop(timeout=30)
        assert code == 0, worker.output()[-2000:]
        assert not worker.killed
    dead = {r["key"]: r for r in read(orders_settings, "orders.dlq", StartAt("beginning"))}
    assert sorted(dead) == ["poison-1", "poison-2", "poison-3"]
    for row in dead.values():
        headers = row["headers"]
        assert headers["sluice.source.topic"] == topic  # the real topic, prefix included
        assert "sluice.source.offset" in headers
        assert headers["sluice.error"]
    assert dead["poison-3"]["value"] is None  # null stays null
    assert "value" not in dead["poison-2"]  # empty stays empty (undecodable, not null)


def _placed_taken(text: str) -> float:
    """orders.placed records a worker's saga took, from a Prometheus exposition."""
    prefix = 'sluice_events_in_total{stage="orders",topic="orders.placed"}'
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(prefix))


def _metrics_text(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


@pytest.mark.slow
def test_sigterm_drains_and_commits_everything_it_took_before_leaving(
    orders_settings: Settings, tmp_path: Path
) -> None:
    """Scaling down without reprocessing: a worker stopped with SIGTERM under load finishes
    what it took and commits it before it leaves the group, so the worker that takes its
    partitions over starts after the last record the leaver took: none of the leaver's
    work is done twice. (Work of the members that stay may be redone up to one commit
    interval when the group rebalances; that is the documented in-flight bound.)"""
    import json

    from pipelines.runtime.faustapp import EXIT_METRICS

    seed_inventory(orders_settings, SKUS)
    count = 1500
    with pipeline.workers(orders_settings, tmp_path) as group:
        leaver = group.start("orders")
        leaver.wait_ready()
        stayer = group.start("orders")
        stayer.wait_ready()
        run = OrderRun(count=count, rate=250, generator=GeneratorConfig(seed=27))
        feeder = threading.Thread(target=produce_orders, args=(orders_settings, run))
        feeder.start()
        time.sleep(3)  # mid-stream
        assert _placed_taken(_metrics_text(leaver.port)) > 0
        assert leaver.stop(timeout=40) == 0, leaver.output()[-2000:]
        assert not leaver.killed
        feeder.join()
        ids = _ids(27, count)
        found = pipeline.wait_for_outcomes(orders_settings, ids, 240, group)
        _check_invariants(orders_settings, found, ids)
        stayer_taken = _placed_taken(_metrics_text(stayer.port))
    app_dir = orders_settings.data_dir / "faust" / orders_settings.group("sluice-orders")
    leaver_dir = app_dir / leaver.name
    state = json.loads((leaver_dir / "backpressure.json").read_text())
    taken, committed = state["last_taken"], state["committed"]
    assert taken, "the leaver took no order"
    for partition, last in taken.items():  # everything it took, it committed
        assert committed[partition] == last + 1, (partition, last, committed[partition])
    # and every order counted: the leaver's and the stayer's work add up to at least all
    leaver_taken = _placed_taken((leaver_dir / EXIT_METRICS).read_text())
    assert leaver_taken + stayer_taken >= count


def test_keyless_and_foreign_keyed_orders_end_once_under_their_own_id(
    orders_settings: Settings, tmp_path: Path
) -> None:
    """Valid orders written the ways other producers write them: no key (Kafka Connect, a
    console producer), another key (the customer id), and the order id as key but hashed
    with librdkafka's CRC32 partitioner (kcat's default). Each is re-keyed before any stock
    is taken, ends exactly once, under its own id in orders.status; stock adds up; nothing
    is dead-lettered. (Before the fix they reserved stock and never ended.)"""
    from confluent_kafka import Producer

    from consumers.tail import StartAt, read
    from pipelines.catalog import PLACED_REKEYED
    from pipelines.serde import serde_for
    from pipelines.stages.homing import home_partition

    settings = orders_settings
    seed_inventory(settings, SKUS)
    gen = OrderGenerator(GeneratorConfig(seed=28, invalid_fraction=0.1))
    orders = [gen.make(n) for n in range(80)]
    serde, topic = serde_for(settings), settings.topic("orders.placed")
    java_like = Producer(settings.confluent_producer())
    crc32 = Producer(settings.confluent_producer(partitioner="consistent"))
    strays = 0
    for n, order in enumerate(orders):
        value = serde.encode("sluice.orders.OrderPlaced", order, topic=topic)
        oid = order["order_id"].encode()
        if n % 4 == 0:
            java_like.produce(topic, value)  # keyless
        elif n % 4 == 1:
            java_like.produce(topic, value, order["customer_id"].encode())
        elif n % 4 == 2:
            crc32.produce(topic, value, oid)
        else:
            java_like.produce(topic, value, oid)  # the way Sluice's producers write it
        if n % 8 == 0:
            java_like.produce(topic, value)  # a keyless duplicate changes nothing
    assert java_like.flush(20) == 0
    assert crc32.flush(20) == 0
    for row in read(settings, "orders.placed", StartAt("beginning")):
        key = (row["key"] or "").encode()
        oid = row["value"]["order_id"].encode()
        strays += key != oid or row["partition"] != home_partition(oid, settings.partitions)
    assert strays > len(orders) // 2  # keyless, foreign keys and most CRC32 placements
    ids = {order["order_id"] for order in orders}
    with pipeline.workers(settings, tmp_path) as group:
        group.start("orders")
        found = pipeline.wait_for_outcomes(settings, ids, 90, group)
        _check_invariants(settings, found, ids)
    assert found.keys() == ids
    statuses = {row["key"] for row in read(settings, "orders.status", StartAt("beginning"))}
    assert statuses == ids  # no "" key for keyless orders, no customer-id keys
    assert list(read(settings, "orders.dlq", StartAt("beginning"))) == []
    rekeyed = list(read(settings, settings.topic(PLACED_REKEYED), StartAt("beginning")))
    assert len(rekeyed) == strays  # only the strays took the detour
    for row in rekeyed:
        oid = row["value"]["order_id"]
        assert row["key"] == oid
        assert row["partition"] == home_partition(oid.encode(), settings.partitions)
