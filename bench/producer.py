"""Producer throughput: Sluice's Avro producer against confluent-kafka's own paths.

  (a) sluice: SingleObjectSerde.encode + EventSender (idempotent, counted deliveries)
  (b) confluent-kafka AvroSerializer + SerializingProducer on the same records
  (c) a raw confluent-kafka loop producing pre-encoded bytes of the same size

All three use the same producer settings (idempotence, acks=all, linger 10 ms, lz4) and
the same pre-generated OrderPlaced records; each round ends with a full flush.

    python -m bench.producer [--records 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

from confluent_kafka import Producer, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import StringSerializer

from bench.common import broker, report, rounds, timed
from pipelines import admin
from pipelines.catalog import TopicSpec
from pipelines.schemas import default_store
from pipelines.serde import SingleObjectSerde
from pipelines.settings import Settings
from producers.generator import GeneratorConfig, OrderGenerator
from producers.sender import EventSender

SCHEMA = "sluice.orders.OrderPlaced"
COMMON = {"linger.ms": 10, "compression.type": "lz4", "queue.buffering.max.messages": 200_000}


def ours(settings: Settings, topic: str, records: list[dict[str, Any]]) -> float:
    serde = SingleObjectSerde()

    def body() -> None:
        sender = EventSender(settings, **COMMON)
        for record in records:
            sender.send(
                topic, record["order_id"].encode(), serde.encode(SCHEMA, record, topic=topic)
            )
        stats = sender.close()
        assert stats.failed == 0
        assert stats.acked == len(records)

    return timed(len(records), body)


def confluent_serializer(settings: Settings, topic: str, records: list[dict[str, Any]]) -> float:
    registry = SchemaRegistryClient.new_client({"url": "mock://bench"})
    schema_str = json.dumps(default_store().latest(SCHEMA).raw)
    conf = settings.confluent_producer(**COMMON)
    conf["key.serializer"] = StringSerializer()
    conf["value.serializer"] = AvroSerializer(registry, schema_str)

    def body() -> None:
        producer = SerializingProducer(conf)
        for record in records:
            while True:
                try:
                    producer.produce(topic, key=record["order_id"], value=record)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        assert producer.flush(120) == 0

    return timed(len(records), body)


def raw_loop(settings: Settings, topic: str, payloads: list[tuple[bytes, bytes]]) -> float:
    def body() -> None:
        producer = Producer(settings.confluent_producer(**COMMON))
        for key, value in payloads:
            while True:
                try:
                    producer.produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        assert producer.flush(120) == 0

    return timed(len(payloads), body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    generator = OrderGenerator(GeneratorConfig(seed=3))
    records = [generator.make(n) for n in range(args.records)]
    serde = SingleObjectSerde()
    payloads = [(r["order_id"].encode(), serde.encode(SCHEMA, r)) for r in records]
    size = sum(len(v) for _, v in payloads) / len(payloads)
    with broker() as bootstrap:
        settings = Settings(bootstrap_servers=bootstrap)
        topic = f"bench.producer.{uuid.uuid4().hex[:6]}"
        admin.ensure_topics(settings, [TopicSpec(topic, "order_id", None, "bench", partitions=6)])
        try:
            results = rounds(
                {
                    "(a) sluice Avro producer": lambda: ours(settings, topic, records),
                    "(b) confluent AvroSerializer": lambda: confluent_serializer(
                        settings, topic, records
                    ),
                    "(c) raw confluent loop (pre-encoded)": lambda: raw_loop(
                        settings, topic, payloads
                    ),
                },
                args.repeats,
            )
        finally:
            admin.delete_topics(settings, [topic])
    report(
        f"Producer: {args.records:,} OrderPlaced records, {size:.0f} B each on average",
        results,
        "(a) sluice Avro producer",
    )


if __name__ == "__main__":
    main()
