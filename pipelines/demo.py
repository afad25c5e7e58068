"""The main job, as `make demo` runs it: start what is missing, produce, read back, report.

Later stages grow this into the whole pipeline; today it proves the ground: a real
broker, the catalog's topics, an idempotent producer and a consumer that sees every
record it sent.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer

from pipelines import admin
from pipelines.localkafka import LocalCluster
from pipelines.settings import Settings

TOPIC = "orders.placed"


def run_demo(
    settings: Settings, *, orders: int, start_local: bool, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Run the demo against `settings`' cluster (started locally first when asked)."""
    if start_local:
        cluster = LocalCluster(settings.data_dir / "kafka", progress=progress)
        result = cluster.up()
        settings = settings.model_copy(update={"bootstrap_servers": result.bootstrap})
        progress(f"Kafka at {result.bootstrap}")
    admin.ensure_topics(settings)
    run_id = uuid.uuid4().hex[:8]
    started = time.monotonic()
    acked, failed = _produce(settings, run_id, orders)
    produce_s = time.monotonic() - started
    progress(f"produced {acked} sample orders in {produce_s:.1f}s; reading them back")
    seen = _consume(settings, run_id, acked)
    return {
        "produced": orders,
        "acknowledged": acked,
        "failed": failed,
        "consumed": seen,
        "missing": acked - seen,
        "produce_events_per_s": round(acked / produce_s, 1) if produce_s else None,
        "elapsed_s": round(time.monotonic() - started, 2),
    }


def _produce(settings: Settings, run_id: str, count: int) -> tuple[int, int]:
    producer = Producer(
        settings.confluent(**{"enable.idempotence": True, "acks": "all", "linger.ms": 5})
    )
    outcome = {"acked": 0, "failed": 0}

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        outcome["failed" if err else "acked"] += 1

    for i in range(count):
        order_id = f"{run_id}-{i}"
        body = {"run": run_id, "order_id": order_id, "quantity": 1 + i % 5}
        while True:
            try:
                producer.produce(
                    TOPIC,
                    key=order_id.encode(),
                    value=json.dumps(body).encode(),
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    producer.flush(60)
    return outcome["acked"], outcome["failed"]


def _consume(settings: Settings, run_id: str, expected: int, timeout: float = 60.0) -> int:
    consumer = Consumer(
        settings.confluent(
            **{
                "group.id": f"sluice-demo-{run_id}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([TOPIC])
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=1.0):
                value = msg.value()
                if msg.error() is None and value:
                    body = json.loads(value)
                    if body.get("run") == run_id:
                        seen.add(body["order_id"])
    finally:
        consumer.close()
    return len(seen)
