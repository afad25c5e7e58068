"""Backpressure on a real broker: lag figures, the orders controller, producers that block."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from pipelines.cli import run
from pipelines.localkafka import jars
from pipelines.localkafka.prereq import check_java
from pipelines.settings import BackpressureSettings, Settings
from producers.generator import GeneratorConfig, OrderGenerator
from producers.inventory import seed_inventory
from producers.orders import OrderRun, produce_orders
from producers.throttle import throttle_for
from tests.support import pipeline


def _kafka_tool(bootstrap: str, group: str) -> tuple[dict[tuple[str, int], Row], str]:
    """What Kafka's own kafka-consumer-groups --describe prints: rows and its full output.

    A row is (lag, consumer id), None where the tool prints "-" (no commit, no member).
    """
    classpath = jars.classpath(jars.local_dir() / "pom.xml")
    out = subprocess.run(
        [
            check_java(),
            "-Xmx256m",
            "-cp",
            classpath,
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--group",
            group,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 7 and parts[0] == group:
            lag = None if parts[5] == "-" else int(parts[5])
            rows[(parts[1], int(parts[2]))] = (lag, None if parts[6] == "-" else parts[6])
    return rows, out


Row = tuple[int | None, str | None]


def _ours(capsys: pytest.CaptureFixture[str]) -> dict[tuple[str, int], Row]:
    rows = json.loads(capsys.readouterr().out)
    return {(r["topic"], r["partition"]): (r["lag"], r["consumer_id"]) for r in rows}


def _fill(settings: Settings, topic: str, count: int) -> None:
    producer = Producer(settings.confluent_producer())
    for i in range(count):
        producer.produce(topic, key=f"k{i}".encode(), value=b"x")
    producer.flush(10)


def test_lag_matches_kafkas_consumer_groups_tool(
    settings: Settings, topic_factory, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = topic_factory("lag", partitions=3)
    _fill(settings, topic, 300)
    group = f"lagcheck-{topic}"
    consumer = Consumer(
        settings.confluent(
            **{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
        )
    )
    consumer.subscribe([topic])
    taken = 0
    while taken < 120:
        taken += len([m for m in consumer.consume(10, timeout=1.0) if m.error() is None])
    consumer.commit(asynchronous=False)
    consumer.close()
    assert run(["lag", "--group", group, "--json", "-b", settings.bootstrap_servers]) == 0
    ours = _ours(capsys)
    theirs, _ = _kafka_tool(settings.bootstrap_servers, group)
    assert ours == theirs
    assert any(lag for lag, _member in ours.values())  # a real, non-trivial comparison


def test_lag_of_an_active_group_with_uncommitted_partitions_matches_kafkas_tool(
    settings: Settings,
    topic_factory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A live member holds three partitions and has committed on one: Kafka's tool lists
    all three (two with "-"), and so must `sluice lag`; the group is found by its name
    under the topic prefix, as `sluice consume` finds topics; a missing group is exit 1."""
    topic = topic_factory("active", partitions=3)
    _fill(settings, topic, 90)
    prefix = "lagpfx."
    group = f"{prefix}active-{topic}"
    member = Consumer(
        settings.confluent(
            **{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
        )
    )
    try:
        member.subscribe([topic])
        first = None
        deadline = time.monotonic() + 30
        while first is None or len(member.assignment()) < 3:
            assert time.monotonic() < deadline, "the member never got its partitions"
            msg = member.poll(0.5)
            if first is None and msg is not None and msg.error() is None:
                first = msg
        member.commit(message=first, asynchronous=False)  # one partition committed, two not
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
        monkeypatch.setenv("SLUICE_TOPIC_PREFIX", prefix)
        unprefixed = group.removeprefix(prefix)
        assert run(["lag", "--group", unprefixed, "--json"]) == 0
        ours = _ours(capsys)
        theirs, tool_output = _kafka_tool(settings.bootstrap_servers, group)
        assert ours == theirs, tool_output
        assert len(ours) == 3
        assert sorted(lag is None for lag, _ in ours.values()) == [False, True, True]
        assert {consumer for _, consumer in ours.values()} == {member.memberid()}
        assert run(["lag", "--group", unprefixed]) == 0
        table = capsys.readouterr().out
        assert "2 assigned partition(s) not committed yet" in table
    finally:
        member.close()
    assert run(["lag", "--group", "no-such-group", "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: consumer group {prefix}no-such-group (nor no-such-group)")


@pytest.fixture
def tight(pipeline_settings: Settings) -> Settings:
    marks = BackpressureSettings(high=150, low=40, interval_s=0.5, buffer_per_partition=50)
    return pipeline_settings.model_copy(update={"backpressure": marks})


def _ended(settings: Settings, ids: set[str]) -> int:
    return len(ids & pipeline.outcomes(settings).keys())


@pytest.mark.slow
def test_orders_pause_on_notification_lag_survive_a_rebalance_and_resume(
    tight: Settings, tmp_path: Path
) -> None:
    """No notifications group drains the notification topics (its lag only grows), so the
    orders app must stop taking new orders; draining that lag lets them through again."""
    seed_inventory(tight, 200)
    gen = OrderGenerator(GeneratorConfig(seed=41))
    with pipeline.workers(tight, tmp_path) as group:
        first = group.start("orders")
        first.wait_ready()
        produce_orders(tight, OrderRun(count=400, generator=GeneratorConfig(seed=41)))
        deadline = time.monotonic() + 60
        while first.metric("sluice_paused_partitions") == 0:
            assert time.monotonic() < deadline, "the orders app never paused"
            time.sleep(0.5)
        time.sleep(3)  # let what was in flight finish
        batch2 = {gen.order_id(n) for n in range(400, 700)}
        produce_orders(
            tight, OrderRun(count=300, start_index=400, generator=GeneratorConfig(seed=41))
        )
        group.start("orders").wait_ready()  # a rebalance while paused
        time.sleep(6)
        assert _ended(tight, batch2) == 0, "orders were taken while paused"
        assert first.metric("sluice_backpressure_transitions_total") >= 1
        _drain_notifications(tight)
        pipeline.wait_for_outcomes(tight, batch2, 120, group)


def _drain_notifications(settings: Settings) -> None:
    """Commit the notification topics' end offsets as the notifications group would."""
    consumer = Consumer(
        settings.confluent(
            **{
                "group.id": settings.group("sluice-notifications"),
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([settings.topic(f"notifications.{c}") for c in ("email", "sms", "push")])
    stop = time.monotonic() + 15
    while time.monotonic() < stop:
        if consumer.consume(1000, timeout=0.5):
            consumer.commit(asynchronous=False)
    consumer.close()


def test_producer_blocks_while_the_order_stage_lags(tight: Settings, tmp_path: Path) -> None:
    seed_inventory(tight, 200)
    produce_orders(tight, OrderRun(count=300, generator=GeneratorConfig(seed=42)))  # backlog
    throttle = throttle_for(tight, "block", 0)
    result: dict[str, float] = {}

    def produce() -> None:
        stats = produce_orders(
            tight,
            OrderRun(count=50, start_index=300, generator=GeneratorConfig(seed=42)),
            throttle=throttle,
        )
        result["throttled"] = stats.throttled_s

    feeder = threading.Thread(target=produce)
    feeder.start()
    time.sleep(4)
    assert feeder.is_alive(), "the producer did not wait for the lag to drain"
    with pipeline.workers(tight, tmp_path) as group:
        group.start("orders")
        feeder.join(timeout=120)
        assert not feeder.is_alive()
    assert result["throttled"] >= 3.0
