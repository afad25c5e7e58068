"""Replay throughput: `sluice replay`'s engine against a bare consume + decode loop.

(a) sluice replay: plan by time, read, decode by schema (with resolution), aggregate
(b) a bare confluent-kafka loop over the same partitions with fastavro decoding the
    same bodies and nothing else: the read ceiling

  python -m bench.replay [--events 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import uuid

import fastavro
from confluent_kafka import Consumer, TopicPartition

from bench.common import broker, report, rounds, timed
from consumers.replay import plan, run
from pipelines import admin
from pipelines.schemas import default_store
from pipelines.settings import Settings
from producers.generator import GeneratorConfig
from producers.orders import OrderRun, produce_orders


def ours(settings: Settings, events: int) -> float:
    def body() -> None:
        the_plan = plan(settings, ["orders.placed"], 0, 2**62)
        aggregator = run(settings, the_plan, settings.analytics)
        assert aggregator.events == events

    return timed(events, body)


def bare(settings: Settings, events: int) -> float:
    schema = default_store().latest("sluice.orders.OrderPlaced").parsed
    topic = settings.topic("orders.placed")

    def body() -> None:
        consumer = Consumer(
            settings.confluent(
                **{
                    "group.id": f"bare-{uuid.uuid4().hex[:6]}",
                    "enable.auto.commit": False,
                    "fetch.max.bytes": 16 * 1024 * 1024,
                }
            )
        )
        consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
        seen = 0
        while seen < events:
            for msg in consumer.consume(2000, timeout=1.0):
                if msg.error() is None:
                    fastavro.schemaless_reader(io.BytesIO(msg.value()[10:]), schema, None)
                    seen += 1
        consumer.close()

    return timed(events, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with broker() as bootstrap:
        settings = Settings(bootstrap_servers=bootstrap, topic_prefix=f"r{uuid.uuid4().hex[:6]}.")
        admin.ensure_topics(settings)
        produce_orders(settings, OrderRun(count=args.events, generator=GeneratorConfig(seed=4)))
        try:
            results = rounds(
                {
                    "(a) sluice replay (decode + aggregate)": lambda: ours(settings, args.events),
                    "(b) bare consume + fastavro decode": lambda: bare(settings, args.events),
                },
                args.repeats,
            )
        finally:
            names = [t for t in admin.list_topics(settings) if t.startswith(settings.topic_prefix)]
            admin.delete_topics(settings, names)
    report(
        f"Replay: {args.events:,} stored OrderPlaced events, 6 partitions",
        results,
        "(a) sluice replay (decode + aggregate)",
    )


if __name__ == "__main__":
    main()
