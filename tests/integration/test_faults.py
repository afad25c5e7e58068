"""Faults on a single broker: a SIGKILLed and restarted broker, garbage on the input, and
a worker that cannot write its data directory.

The tests share one single-node local Kafka of this module's own (not the session
broker: one of them kills it) and each runs under its own topic prefix. The three-node
failover lives in test_cluster.py and bench/failover.py.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from pipelines import admin, rules
from pipelines.localkafka import LocalCluster
from pipelines.providers import ProvidersConfig, providers_in_thread
from pipelines.runner import StageProcess, free_port
from pipelines.serde import HEADER, MAGIC, SingleObjectSerde
from pipelines.settings import NotificationSettings, Settings
from producers.generator import GeneratorConfig, OrderGenerator
from producers.inventory import seed_inventory
from producers.orders import OrderRun, produce_orders
from producers.sender import SendStats
from tests.integration.test_orders import SKUS, _check_invariants
from tests.support import pipeline
from tests.support.brokers import local_kafka

PLACED = "sluice.orders.OrderPlaced"


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A one-node broker of this module's own, on free ports, stopped at the end."""
    with local_kafka(tmp_path_factory.mktemp("single"), brokers=1) as cluster:
        yield cluster


def _settings(cluster: LocalCluster, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings with a private prefix and every catalog topic created under it."""
    settings = Settings(
        bootstrap_servers=cluster.bootstrap,
        topic_prefix=f"f{uuid.uuid4().hex[:8]}.",
        data_dir=tmp_path / "sluice",
        partitions=3,
        commit_interval_s=1.0,
        **overrides,
    )
    admin.ensure_topics(settings)
    return settings


def _orders_only(settings: Settings) -> Settings:
    """Backpressure off: with the order stage alone nothing drains the notification
    topics, so their lag only grows and the controller would (rightly) pause for good."""
    off = settings.backpressure.model_copy(update={"enabled": False})
    return settings.model_copy(update={"backpressure": off})


def _ids(seed: int, count: int) -> set[str]:
    gen = OrderGenerator(GeneratorConfig(seed=seed))
    return {gen.order_id(n) for n in range(count)}


def _pids(worker: StageProcess) -> tuple[int, int]:
    """The `sluice worker` supervisor's pid and that of the Faust worker it runs (its only
    child): a worker that gave up and was restarted would show a new child pid."""
    pid = worker.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return pid, int(children[0])


def _sluice(settings: Settings, *argv: str, **popen: Any) -> subprocess.Popen[bytes]:
    """`sluice ARGV` as a child process configured from `settings`."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *argv],
        env={**os.environ, **settings.as_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


@pytest.mark.slow
@pytest.mark.chaos
def test_broker_restart_loses_nothing_and_restarts_nothing(
    single: LocalCluster, tmp_path: Path
) -> None:
    """SIGKILL the only broker mid-run and start it again 5 s later (it takes another
    10-15 s to serve on 2 cores). The producer buffers and retries, both workers reconnect
    in the same processes, and afterwards every order has exactly one terminal event,
    stock adds up and every notification has exactly one result."""
    count, seed = 300, 71
    with providers_in_thread(ProvidersConfig(smtp_port=0, http_port=0)) as providers:
        settings = _settings(
            single,
            tmp_path,
            notifications=NotificationSettings(retry_delays_s=(1.0, 2.0, 4.0)),
            delivery=providers.delivery_settings(),
        )
        seed_inventory(settings, SKUS)
        with pipeline.workers(settings, tmp_path / "logs") as fleet:
            workers = [fleet.start(stage) for stage in ("orders", "notifications")]
            for worker in workers:
                worker.wait_ready(timeout=120)
            pids = [_pids(w) for w in workers]
            producer = _sluice(
                settings,
                *("produce", "orders", "--count", str(count), "--rate", "30"),
                *("--seed", str(seed), "--json"),
            )
            try:
                time.sleep(3)  # mid-run: about 90 of the 300 orders sent
                assert producer.poll() is None, "the producer finished before the fault"
                single.kill(1, signal.SIGKILL)
                assert single.running_nodes() == []
                killed_at = time.monotonic()
                time.sleep(5)
                single.start_node(1)
                outage = time.monotonic() - killed_at
                out, err = producer.communicate(timeout=150)
            finally:
                if producer.poll() is None:
                    producer.kill()
                    producer.communicate()
            assert producer.returncode == 0, err.decode()[-3000:]
            summary = json.loads(out)
            assert summary["failed"] == 0
            assert summary["sent"] == summary["acknowledged"] == count
            # most orders were sent while the broker was away: they waited in the buffer
            assert summary["delivery_p99_ms"] >= 5000, (summary, outage)
            ids = _ids(seed, count)
            found = pipeline.wait_for_outcomes(settings, ids, 90, fleet)
            _check_invariants(settings, found, ids)
            expected = sum(len(rules.channels_for(e[0]["customer_id"])) for e in found.values())
            results = pipeline.notification_results(settings, expected, timeout=60)
            assert len(results) == expected
            assert all(n == 1 for n in results.values()), "a notification has two results"
            for worker, before in zip(workers, pids, strict=True):
                assert worker.alive(), worker.output()[-3000:]
                assert _pids(worker) == before, f"{worker.name} was restarted"
    print(f"broker outage {outage:.1f}s; producer {summary}")


def _garbage(valid: dict[str, Any]) -> dict[bytes, tuple[bytes | None, str]]:
    """One record of each kind of garbage, by key: its bytes and the reason expected.

    `valid` is a real OrderPlaced; most kinds are damaged copies of its encoding. The
    last is well-formed Avro framing whose body a lax writer produced (fastavro writes any
    int as a long): a valid-looking order for 2**40 units, which fastavro decodes and
    which, before the decoder's int guard, got past the DLQ into the saga.
    """
    import random

    import fastavro

    from pipelines.schemas import default_store

    schema = default_store().latest(PLACED)
    encoded = SingleObjectSerde().encode(PLACED, valid)
    noise = random.Random(10).randbytes(48)
    assert noise[:2] != MAGIC
    huge = 2**40
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body,
        schema.parsed,
        {**valid, "lines": [{"sku": "SKU-00001", "quantity": huge, "unit_price_cents": 1}]}
        | {"total_cents": huge, "currency": "EUR"},
    )
    return {
        b"garbage-random": (noise, "not Avro single-object encoding"),
        b"garbage-truncated": (encoded[: len(encoded) - 9], "cannot decode body"),
        b"garbage-magic": (b"\x00\x00" + encoded[2:], "not Avro single-object encoding"),
        b"garbage-empty": (b"", "too short"),
        b"garbage-null": (None, "too short"),
        b"garbage-fingerprint": (MAGIC + bytes(8) + encoded[HEADER:], "unknown schema fingerprint"),
        b"garbage-int-overflow": (
            MAGIC + schema.fingerprint + body.getvalue(),
            f"lines[0].quantity: {huge} is out of range for int",
        ),
    }


def _read_all(settings: Settings, topic: str) -> list[Message]:
    """Every record of `topic` (by assignment, from the start to the end seen now)."""
    physical = settings.topic(topic)
    consumer = Consumer(
        settings.confluent(**{"group.id": f"check-{uuid.uuid4().hex}", "enable.auto.commit": False})
    )
    try:
        partitions = admin.list_topics(settings)[physical].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(physical, p), timeout=10)[1]
            for p in range(partitions)
        }
        consumer.assign([TopicPartition(physical, p, 0) for p in range(partitions)])
        got: list[Message] = []
        deadline = time.monotonic() + 60
        while sum(ends.values()) > len(got) and time.monotonic() < deadline:
            got += [m for m in consumer.consume(500, timeout=1.0) if m.error() is None]
    finally:
        consumer.close()
    assert len(got) == sum(ends.values()), f"read {len(got)} of {sum(ends.values())}"
    return got


def test_one_percent_garbage_goes_to_the_dlq_with_its_source(
    single: LocalCluster, tmp_path: Path
) -> None:
    """500 valid orders and 7 garbage records (~1%) interleaved on orders.placed by a raw
    producer: each garbage record is dead-lettered once with its reason, the source topic
    (prefixed) and coordinates that really hold its bytes, and its value as it came (a
    null value stays null); every valid order ends once, counts add up."""
    settings = _orders_only(_settings(single, tmp_path))
    seed_inventory(settings, SKUS)
    count, seed = 500, 72
    topic = settings.topic("orders.placed")
    garbage = _garbage(OrderGenerator(GeneratorConfig(seed=999)).make(0))
    stats: list[SendStats] = []
    with pipeline.workers(settings, tmp_path / "logs") as fleet:
        worker = fleet.start("orders")
        worker.wait_ready(timeout=120)
        run = OrderRun(count=count, rate=100, generator=GeneratorConfig(seed=seed))
        feeder = threading.Thread(target=lambda: stats.append(produce_orders(settings, run)))
        feeder.start()
        raw = Producer(settings.confluent_producer())
        for key, (value, _reason) in garbage.items():
            time.sleep(0.7)  # spread over the 5 s the valid orders take
            raw.produce(topic, value=value, key=key)
            raw.poll(0)
        assert raw.flush(30) == 0
        feeder.join()
        assert [(s.acked, s.failed) for s in stats] == [(count, 0)]
        ids = _ids(seed, count)
        found = pipeline.wait_for_outcomes(settings, ids, 120, fleet)
        _check_invariants(settings, found, ids)  # also waits until the group is idle
        assert found.keys() == ids
        assert worker.metric("sluice_dead_letters_total") == len(garbage)

    placed = _read_all(settings, "orders.placed")
    assert len(placed) == count + len(garbage)
    at = {(m.partition(), m.offset()): m for m in placed}
    assert {m.key() for m in placed} == {oid.encode() for oid in ids} | garbage.keys()

    dead = _read_all(settings, "orders.dlq")
    assert len(dead) == len(garbage)
    assert {m.key() for m in dead} == garbage.keys()
    for letter in dead:
        key = letter.key()
        assert key is not None
        headers = {name: (data or b"").decode() for name, data in letter.headers() or []}
        value, reason = garbage[key]
        assert reason in headers["sluice.error"], (key, headers)
        assert headers["sluice.stage"] == "orders"
        assert headers["sluice.source.topic"] == topic  # the real topic, prefix included
        source = at[int(headers["sluice.source.partition"]), int(headers["sluice.source.offset"])]
        assert (source.key(), source.value()) == (key, value)  # the offset is right
        assert letter.value() == value  # dead-lettered as it came: null stays null


@pytest.mark.chaos
def test_a_worker_that_cannot_write_its_data_dir_says_so_in_one_line(
    single: LocalCluster, tmp_path: Path
) -> None:
    """`sluice worker orders` with a data dir it cannot create (a path under a regular
    file, which stops root too): exit 1 and one line naming the culprit and the fix,
    before the Faust worker starts, so no traceback. The read-only (mode 0o500) variant
    is a unit test in tests/unit/test_diskcheck.py: it cannot fail as root, and a skip
    here would fail `make test` (integration tests must run)."""
    settings = _settings(single, tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    bad = settings.model_copy(update={"data_dir": blocker / "sluice"})
    worker = _sluice(bad, "worker", "orders", "--web-port", str(free_port()), "--name", "w1")
    try:
        out, err = worker.communicate(timeout=90)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 1, err.decode()
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, err.decode()
    assert lines[0].startswith("error: cannot write the worker's tables in "), lines[0]
    assert f"{blocker} is a file, not a directory" in lines[0]
    assert "SLUICE_DATA_DIR" in lines[0]
    assert out == b""
