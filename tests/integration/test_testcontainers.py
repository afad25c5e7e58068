"""The testcontainers path of the broker fixture, exercised where a Docker engine answers.

On machines without a container engine (ours) this skips with the reason; the local
broker path covers every other integration test there.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer

from tests.support.brokers import docker_unavailable_reason, kafka_container

pytestmark = pytest.mark.docker


def test_kafka_container_round_trip() -> None:
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(f"testcontainers path not exercised: {reason}")
    with kafka_container() as bootstrap:
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce("tc-check", value=b"hello")
        assert producer.flush(30) == 0
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "tc", "auto.offset.reset": "earliest"}
        )
        consumer.subscribe(["tc-check"])
        msg = None
        for _ in range(30):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                break
        consumer.close()
        assert msg is not None
        assert msg.value() == b"hello"
