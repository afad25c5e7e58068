"""A three-node KRaft cluster survives a SIGKILLed broker without losing acknowledged writes."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from pipelines import admin
from pipelines.catalog import TopicSpec
from pipelines.localkafka import LocalCluster
from pipelines.settings import Settings
from tests.support.brokers import local_kafka

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_kafka(tmp_path_factory.mktemp("cluster3"), brokers=3) as running:
        yield running


def _produce(producer: Producer, topic: str, start: int, count: int, acked: list[bytes]) -> None:
    def on_delivery(err: KafkaError | None, msg: object) -> None:
        assert err is None, err
        acked.append(msg.value())  # type: ignore[attr-defined]

    for i in range(start, start + count):
        producer.produce(
            topic, key=f"k{i % 11}".encode(), value=f"r{i}".encode(), on_delivery=on_delivery
        )
        producer.poll(0)
        time.sleep(0.002)


def _all_three_registered(settings: Settings, timeout: float = 60.0) -> admin.ClusterInfo:
    """The cluster's view once all three brokers are in it. Right after `up` a broker
    starved of CPU by the other two JVMs can miss heartbeats and be fenced for a few
    seconds (seen once in a full-suite run: one broker listed), which is not what the
    test is about, so it waits for the three before killing one."""
    deadline = time.monotonic() + timeout
    info = admin.describe_cluster(settings)
    while len(info.brokers) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
        info = admin.describe_cluster(settings)
    assert len(info.brokers) == 3, info
    return info


@pytest.mark.chaos
def test_sigkill_one_broker_keeps_every_acked_record(cluster: LocalCluster) -> None:
    settings = Settings(bootstrap_servers=cluster.bootstrap)
    info = _all_three_registered(settings)
    topic = "test.failover"
    admin.ensure_topics(settings, [TopicSpec(topic, "k", None, "failover", partitions=6)])
    state = admin.list_topics(settings)[topic]
    assert state.replication == 3
    assert admin.topic_config(settings, topic)["min.insync.replicas"] == "2"

    producer = Producer(
        settings.confluent(**{"enable.idempotence": True, "acks": "all", "linger.ms": 5})
    )
    acked: list[bytes] = []
    _produce(producer, topic, 0, 1500, acked)
    victim = info.controller_id if info.controller_id is not None else 2
    cluster.kill(victim, signal.SIGKILL)
    assert victim not in cluster.running_nodes()
    _produce(producer, topic, 1500, 1500, acked)
    assert producer.flush(60) == 0
    assert len(acked) == 3000

    consumer = Consumer(
        settings.confluent(**{"group.id": "failover-check", "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([topic])
    got: set[bytes] = set()
    deadline = time.monotonic() + 60
    while len(got) < 3000 and time.monotonic() < deadline:
        for msg in consumer.consume(1000, timeout=1.0):
            if msg.error() is None:
                got.add(msg.value())
    consumer.close()
    assert got == set(acked)

    cluster.start_node(victim)
    assert sorted(cluster.running_nodes()) == [1, 2, 3]


def test_up_on_a_running_cluster_is_a_no_op(cluster: LocalCluster) -> None:
    again = LocalCluster(cluster.root, 3)
    result = again.up()
    assert result.already_running
    assert result.bootstrap == cluster.bootstrap


def test_unknown_node_is_refused(cluster: LocalCluster) -> None:
    from pipelines.errors import LocalKafkaError

    with pytest.raises(LocalKafkaError, match="no node 9"):
        cluster.kill(9)


@pytest.mark.slow
@pytest.mark.chaos
def test_the_pipeline_keeps_its_invariants_while_brokers_die(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """Orders and notifications run while a broker is SIGKILLed and restarted every 20 s
    (the active KRaft controller every other time): RF=3, min.insync.replicas=2,
    idempotent producers with acks=all. Afterwards each order has one terminal event,
    stock adds up, and each notification has exactly one result."""
    from pipelines import rules
    from pipelines.localkafka.chaos import BrokerChaos
    from pipelines.providers import ProvidersConfig, providers_in_thread
    from pipelines.settings import NotificationSettings
    from producers.generator import GeneratorConfig, OrderGenerator
    from producers.inventory import seed_inventory
    from producers.orders import OrderRun, produce_orders
    from tests.integration.test_orders import _check_invariants
    from tests.support import pipeline

    cluster.up()
    count = 1200
    with providers_in_thread(ProvidersConfig(smtp_port=0, http_port=0)) as handle:
        settings = Settings(
            bootstrap_servers=cluster.bootstrap,
            topic_prefix=f"fo{uuid.uuid4().hex[:6]}.",
            data_dir=tmp_path / "sluice",
            notifications=NotificationSettings(retry_delays_s=(1.0, 2.0, 4.0)),
            delivery=handle.delivery_settings(),
        )
        admin.ensure_topics(settings)
        seed_inventory(settings, 200)
        with pipeline.workers(settings, tmp_path / "logs") as fleet:
            for stage in ("orders", "notifications"):
                fleet.start(stage).wait_ready(timeout=120)
            chaos = BrokerChaos(cluster, period_s=20, down_s=5)
            chaos.start()
            try:
                stats = produce_orders(
                    settings, OrderRun(count=count, rate=20, generator=GeneratorConfig(seed=61))
                )
            finally:
                faults = chaos.stop()
            assert chaos.error is None, chaos.error
            assert stats.failed == 0
            assert len(faults) >= 2  # a restarted node takes ~20 s to rejoin on 2 cores
            assert any(f.was_controller for f in faults), faults
            assert sorted(cluster.running_nodes()) == [1, 2, 3]
            gen = OrderGenerator(GeneratorConfig(seed=61))
            ids = {gen.order_id(n) for n in range(count)}
            found = pipeline.wait_for_outcomes(settings, ids, 300, fleet)
            _check_invariants(settings, found, ids)
            expected = sum(len(rules.channels_for(e[0]["customer_id"])) for e in found.values())
            results = pipeline.notification_results(settings, expected, timeout=240)
    assert len(results) == expected
    assert all(n == 1 for n in results.values()), "a notification has two results"
