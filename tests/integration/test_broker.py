"""The foundation on a real broker: clients round-trip records, and a Faust agent runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer

from pipelines.settings import Settings
from tests.support import processes


def _read(
    settings: Settings, topic: str, count: int, timeout: float = 30.0
) -> list[tuple[bytes, bytes]]:
    consumer = Consumer(
        settings.confluent(**{"group.id": f"read-{topic}", "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([topic])
    got: list[tuple[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=1.0):
                assert msg.error() is None, msg.error()
                got.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    return got


def test_confluent_round_trip(settings: Settings, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("confluent")
    producer = Producer(settings.confluent(**{"enable.idempotence": True, "acks": "all"}))
    sent = [(f"k{i % 7}".encode(), f"value-{i}".encode()) for i in range(500)]
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0
    got = _read(settings, topic, len(sent))
    assert sorted(got) == sorted(sent)
    for key in {k for k, _ in sent}:  # per-key order survives partitioning
        assert [v for k, v in got if k == key] == [v for k, v in sent if k == key]


def test_aiokafka_round_trip(settings: Settings, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("aiokafka")

    async def scenario() -> list[bytes]:
        producer = AIOKafkaProducer(**settings.aiokafka(acks="all", enable_idempotence=True))
        await producer.start()
        try:
            for i in range(200):
                await producer.send(topic, key=b"k", value=f"v{i}".encode())
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, **settings.aiokafka(group_id=f"g-{topic}", auto_offset_reset="earliest")
        )
        await consumer.start()
        values: list[bytes] = []
        try:
            while len(values) < 200:
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
                for records in batch.values():
                    values.extend(r.value for r in records)
        finally:
            await consumer.stop()
        return values

    values = asyncio.run(scenario())
    assert values == [f"v{i}".encode() for i in range(200)]


def test_faust_agent_consumes_and_produces(
    settings: Settings, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    source, sink = topic_factory("echo-in", partitions=2), topic_factory("echo-out", partitions=2)
    worker = processes.start(
        processes.python(
            "-m", "faust", "-A", "tests.integration.faust_echo", "worker", "-l", "info"
        ),
        tmp_path / "worker.log",
        env={
            "ECHO_BROKER": settings.faust_broker(),
            "ECHO_IN": source,
            "ECHO_OUT": sink,
            "ECHO_APP_ID": f"echo-{source}",
            "ECHO_DATADIR": str(tmp_path / "faust"),
        },
    )
    try:
        producer = Producer(settings.confluent())
        for i in range(50):
            producer.produce(source, key=f"k{i % 5}".encode(), value=f"hello {i}".encode())
        producer.flush(30)
        got = _read(settings, sink, 50, timeout=60)
        assert sorted(v for _, v in got) == sorted(f"HELLO {i}".encode() for i in range(50))
        assert worker.alive(), worker.output()[-2000:]
    finally:
        code = worker.stop()
    assert not worker.killed, "the Faust worker did not stop on SIGTERM"
    assert code == 0, worker.output()[-2000:]
