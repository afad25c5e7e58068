"""A secure local Kafka (SASL_SSL, SCRAM-SHA-512, ACLs): who gets in, and who may do what.

One secure single-node cluster for the module, made by the same `LocalCluster(secure=True)`
that `sluice kafka up --secure` runs. Refusals are checked through the real CLI in a
child process, so "one clear line, no traceback, no secret" is what a user would see.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from consumers.tail import StartAt, read
from pipelines import admin
from pipelines.acls import apply_acls
from pipelines.catalog import all_specs
from pipelines.localkafka import LocalCluster
from pipelines.localkafka.cluster import free_base_port
from pipelines.providers import ProvidersConfig, providers_in_thread
from pipelines.settings import NotificationSettings, Settings
from pipelines.stages.windows import WindowConfig
from pipelines.topology import CHANNELS
from producers.generator import GeneratorConfig, OrderGenerator
from producers.inventory import seed_inventory
from producers.orders import OrderRun, produce_orders
from tests.support import pipeline

SMALL = WindowConfig(tumbling_s=5, hopping_s=20, hop_s=10, lateness_s=2, top_n=3)
FAST = NotificationSettings(retry_delays_s=(0.5, 1.0, 2.0), max_attempts=4, concurrency=4)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(
        tmp_path_factory.mktemp("secure-kafka"), 1, free_base_port(), heap_mb=320, secure=True
    )
    try:
        cluster.up(timeout=120)
        yield cluster
    finally:
        cluster.down(purge=True)


def _prefixed(cluster: LocalCluster, tmp_path: Path) -> str:
    """A private topic prefix with every catalog topic and ACL entry created (as admin)."""
    prefix = f"s{uuid.uuid4().hex[:8]}."
    boss = cluster.client_settings("admin", topic_prefix=prefix, partitions=3)
    admin.ensure_topics(boss, broker_count=1)
    apply_acls(boss)
    return prefix


def _as(cluster: LocalCluster, principal: str, prefix: str, tmp_path: Path, **kw: Any) -> Settings:
    return cluster.client_settings(
        principal,
        topic_prefix=prefix,
        partitions=3,
        data_dir=tmp_path / principal,
        **kw,
    )


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.as_env()}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_clear_line(proc: subprocess.CompletedProcess[str], needle: str, secret: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert secret not in proc.stderr + proc.stdout


def _end_offsets(settings: Settings, topic: str) -> list[int]:
    consumer = Consumer(settings.confluent(**{"group.id": "sluice-offsets-probe"}))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts
        ]
    finally:
        consumer.close()


def test_a_plaintext_client_is_refused_with_a_clear_line(secure: LocalCluster) -> None:
    plain = Settings(bootstrap_servers=secure.bootstrap, request_timeout_s=4)
    proc = _cli(plain, "topics", "list")
    _one_clear_line(proc, "likely requires TLS/SASL", "no-secret-here")


def test_a_wrong_password_is_refused_without_showing_it(secure: LocalCluster) -> None:
    right = secure.client_settings("orders", request_timeout_s=4)
    wrong_password = "wrong-" + uuid.uuid4().hex
    wrong = right.model_copy(
        update={
            "security": right.security.model_copy(update={"password": SecretStr(wrong_password)})
        }
    )
    proc = _cli(wrong, "topics", "list")
    _one_clear_line(proc, "authentication failed", wrong_password)
    assert "user 'orders'" in proc.stderr


def test_the_right_password_gets_in_and_sees_only_its_topics(
    secure: LocalCluster, tmp_path: Path
) -> None:
    prefix = _prefixed(secure, tmp_path)
    seen = admin.list_topics(_as(secure, "notifications", prefix, tmp_path))
    mine = {t for t in seen if t.startswith(prefix)}
    assert prefix + "notifications.sms" in mine
    assert prefix + "orders.placed" not in mine
    every = admin.list_topics(_as(secure, "admin", prefix, tmp_path))
    assert {prefix + s.name for s in all_specs()} <= every.keys()


def test_a_stage_cannot_write_another_stages_topic(secure: LocalCluster, tmp_path: Path) -> None:
    prefix = _prefixed(secure, tmp_path)
    boss = _as(secure, "admin", prefix, tmp_path)
    placed = boss.topic("orders.placed")
    before = _end_offsets(boss, placed)

    # notifications may not even see orders.placed: refused before anything is sent
    notifications = _as(secure, "notifications", prefix, tmp_path)
    proc = _cli(notifications, "produce", "orders", "--count", "20", "--rate", "0")
    password = notifications.security.password
    assert password is not None
    _one_clear_line(proc, "may not use topic " + placed, password.get_secret_value())

    # orders may read orders.placed but not write it: the broker refuses the records
    orders = _as(secure, "orders", prefix, tmp_path)
    proc = _cli(orders, "produce", "orders", "--count", "20", "--rate", "0")
    assert proc.returncode != 0
    assert "authorization failed" in proc.stderr.lower(), proc.stderr
    assert "Traceback" not in proc.stderr

    assert _end_offsets(boss, placed) == before  # nothing half-written


@pytest.mark.slow
def test_the_whole_pipeline_keeps_its_invariants_with_acls_on(
    secure: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = _prefixed(secure, tmp_path)
    boss = _as(secure, "admin", prefix, tmp_path, analytics=SMALL)
    seed_inventory(boss, 200)  # stock is an operator's job: the admin principal
    started_ms = int(time.time() * 1000)
    count = 150
    with providers_in_thread(ProvidersConfig(smtp_port=0, http_port=0)) as handle:
        delivery = handle.delivery_settings(http_timeout_s=2.0)
        notify = _as(
            secure, "notifications", prefix, tmp_path, notifications=FAST, delivery=delivery
        )
        with (
            pipeline.workers(_as(secure, "orders", prefix, tmp_path), tmp_path / "o") as orders,
            pipeline.workers(notify, tmp_path / "n") as notifications,
            pipeline.workers(
                _as(secure, "analytics", prefix, tmp_path, analytics=SMALL), tmp_path / "a"
            ) as analytics,
        ):
            workers = [
                orders.start("orders"),
                notifications.start("notifications"),
                analytics.start("analytics"),
            ]
            for worker in workers:
                worker.wait_ready()
            run = OrderRun(
                count=count, rate=50, generator=GeneratorConfig(seed=11, invalid_fraction=0.1)
            )
            stats = produce_orders(_as(secure, "producer", prefix, tmp_path), run)
            assert stats.acked == count
            ids = {OrderGenerator(GeneratorConfig(seed=11)).order_id(n) for n in range(count)}
            found = pipeline.wait_for_outcomes(boss, ids, 120, orders)
            assert all(len(v) == 1 for v in found.values())
            _intake_as_producer(secure, prefix, tmp_path)
            requested = _requested_ids(boss)
            results = _wait_for_results(boss, requested, 120)
            assert all(n == 1 for n in results.values()), results.most_common(3)
            time.sleep(SMALL.hopping_s + SMALL.lateness_s + 2)
            live = pipeline.settled_windows(boss)
            logs = "".join(w.output() for w in workers)

    for principal, password in secure.material.passwords().items():
        assert password not in logs, f"{principal}'s password is in a worker log"

    replayer = _as(secure, "analytics", prefix, tmp_path, analytics=SMALL)
    report = tmp_path / "replay.json"
    proc = _cli(
        replayer,
        "replay",
        "--from",
        str(started_ms - 60_000),
        "--to",
        str(int(time.time() * 1000)),
        "--report",
        str(report),
    )
    assert proc.returncode == 0, proc.stderr
    replayed = {w["window_key"]: w for w in json.loads(report.read_text())["windows"]}
    assert replayed == live


def _intake_as_producer(secure: LocalCluster, prefix: str, tmp_path: Path) -> None:
    """The intake API as the producer principal: accepts orders, reports their outcome."""
    from tests.integration.test_intake import intake, order

    with intake(_as(secure, "producer", prefix, tmp_path), tmp_path) as server:
        accepted = [server.post(order((n, 1))) for n in (1, 2, 3)]
        assert [reply.status for reply in accepted] == [202, 202, 202]
        for reply in accepted:
            deadline = time.monotonic() + 60
            while server.status(reply.body["order_id"]).body["status"] == "ACCEPTED":
                assert time.monotonic() < deadline, reply.body
                time.sleep(0.5)


def _requested_ids(settings: Settings) -> set[str]:
    ids: set[str] = set()
    for topic in CHANNELS:
        ids |= {row["key"] for row in read(settings, topic, StartAt("beginning"))}
    return ids


def _wait_for_results(settings: Settings, ids: set[str], timeout: float) -> Counter[str]:
    """How many final results each requested notification got, once all have one."""
    deadline = time.monotonic() + timeout
    counts: Counter[str] = Counter()
    while time.monotonic() < deadline:
        rows = read(settings, "notifications.results", StartAt("beginning"))
        counts = Counter(row["key"] for row in rows if row.get("value") is not None)
        if ids <= counts.keys():
            return counts
        time.sleep(1.0)
    raise AssertionError(f"{len(ids - counts.keys())} notifications without a result")
