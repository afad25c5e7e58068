"""The floor bench's backlogs, its bare-client contenders and the check of what each sent.

Each round gets a fresh backlog topic (6 partitions) and its `.out` topic, so every
contender starts from the same records with a consumer group of its own. The bare loops
run in the bench's own process: consume a batch, hand each record (transformed or not)
to the producer, and time first record → N-th record handed over (the confluent-kafka
loop: through its flush), with the process CPU, which includes the client's own threads,
over the same span. Afterwards each run's
output is checked: at least N records arrived, and a sampled one is what the contender
was meant to send, so no round can be fast by doing less.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 6
LINGER_MS = 50  # as the Faust floor app and our stages (producer_linger=0.05)

Change = Callable[[bytes], bytes] | None  # None: forward unchanged
Figures = tuple[float, float]  # records/s, CPU seconds per record


def backlog(bootstrap: str, payloads: Sequence[tuple[bytes, bytes]]) -> str:
    """A fresh topic (and its .out) holding `payloads` as (key, value) records."""
    name = f"floor-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(t, PARTITIONS, 1) for t in (name, f"{name}.out")]
    for future in admin.create_topics(new).values():
        future.result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i, (key, value) in enumerate(payloads):
        producer.produce(name, key=key, value=value)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("the backlog was not acknowledged within 60 s")
    return name


def check_output(
    bootstrap: str, topic: str, records: int, expected: Callable[[bytes, bytes], bool]
) -> None:
    """Fail unless `topic`.out holds at least `records` records and a sample is `expected`."""
    out = f"{topic}.out"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{out}.check"})
    try:
        ends = [
            consumer.get_watermark_offsets(TopicPartition(out, p), 10)[1] for p in range(PARTITIONS)
        ]
        if sum(ends) < records:
            raise RuntimeError(f"{out} holds {sum(ends)} records, expected at least {records}")
        partition = next(p for p, end in enumerate(ends) if end)
        consumer.assign([TopicPartition(out, partition, 0)])
        message = consumer.poll(10)
        if message is None or message.error():
            raise RuntimeError(f"could not read back a record of {out}")
        if not expected(message.key(), message.value()):
            raise RuntimeError(f"{out} holds a record its contender should not have sent")
    finally:
        consumer.close()


def aiokafka_run(bootstrap: str, topic: str, records: int, change: Change) -> Figures:
    """A plain aiokafka loop: getmany, send each record to `topic`.out."""
    return asyncio.run(_aiokafka(bootstrap, topic, records, change))


async def _aiokafka(bootstrap: str, topic: str, records: int, change: Change) -> Figures:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=topic, auto_offset_reset="earliest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=LINGER_MS)
    await consumer.start()
    await producer.start()
    out, seen, started, cpu = f"{topic}.out", 0, 0.0, 0.0
    try:
        while seen < records:
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            for partition_records in batch.values():
                for record in partition_records:
                    if seen == 0:
                        started, cpu = time.monotonic(), time.process_time()
                    seen += 1
                    value = change(record.value) if change else record.value
                    await producer.send(out, value, key=record.key)
        return figures(records, started, cpu)
    finally:
        await consumer.stop()
        await producer.stop()


def confluent_run(bootstrap: str, topic: str, records: int, change: Change) -> Figures:
    """A plain confluent-kafka loop: consume a batch, produce each to `topic`.out; flush."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest"}
    )
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": LINGER_MS})
    consumer.subscribe([topic])
    out, seen, started, cpu = f"{topic}.out", 0, 0.0, 0.0
    try:
        while seen < records:
            for message in consumer.consume(500, 0.2):
                if message.error():
                    raise RuntimeError(f"consume failed: {message.error()}")
                if seen == 0:
                    started, cpu = time.monotonic(), time.process_time()
                seen += 1
                value = message.value()
                _produce(producer, out, message.key(), change(value) if change else value)
            producer.poll(0)
        # Through the flush: 30,000 records take this loop less than one 50 ms linger, so
        # stopping at the last produce() would time librdkafka queueing, not sending.
        if producer.flush(60):
            raise RuntimeError("the confluent-kafka loop's records were not acknowledged")
        return figures(records, started, cpu)
    finally:
        consumer.close()


def _produce(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    """Produce, waiting for room when librdkafka's local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.05)


def figures(records: int, started: float, cpu: float) -> Figures:
    """Records/s and CPU seconds per record since (`started`, `cpu`)."""
    return records / (time.monotonic() - started), (time.process_time() - cpu) / records
