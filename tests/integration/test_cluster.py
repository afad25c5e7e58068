"""A three-node KRaft cluster survives a SIGKILLed broker without losing acknowledged writes."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

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


def test_sigkill_one_broker_keeps_every_acked_record(cluster: LocalCluster) -> None:
    settings = Settings(bootstrap_servers=cluster.bootstrap)
    info = admin.describe_cluster(settings)
    assert len(info.brokers) == 3
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
