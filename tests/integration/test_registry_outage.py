"""A schema registry outage on a real broker: records wait for it, none is dead-lettered.

The registry is the minimal Confluent-compatible one in tests/support, over real HTTP,
stopped and started again on the same port with its schemas kept (as a real registry
keeps them in its `_schemas` topic).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from consumers.tail import StartAt, read
from pipelines.serde import serde_for
from pipelines.settings import Settings
from pipelines.stages.windows import WindowConfig
from producers.generator import GeneratorConfig, OrderGenerator
from producers.inventory import seed_inventory
from tests.support import pipeline
from tests.support.processes import wait_for
from tests.support.registry import running_registry

PLACED = "sluice.orders.OrderPlaced"
SMALL = WindowConfig(tumbling_s=5, hopping_s=20, hop_s=10, lateness_s=2, top_n=3)


def _dead(settings: Settings, topic: str) -> list[str]:
    return [
        str((row.get("headers") or {}).get("sluice.error"))
        for row in read(settings, topic, StartAt("beginning"))
    ]


@pytest.mark.slow
@pytest.mark.chaos
def test_registry_down_while_orders_arrive_delays_them_and_dead_letters_none(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    """The order and analytics workers start while the registry is down, and orders framed
    with schema ids they have never seen arrive. They wait (healthy, nothing in any DLQ, one
    log line per interval, not per record); once the registry is back every order ends
    exactly once and analytics counts every one of them. (Before the fix each record went
    to the DLQ: "schema id N not available from the registry: ... connection refused".)"""
    count = 120
    with running_registry() as registry:
        off = pipeline_settings.backpressure.model_copy(update={"enabled": False})
        settings = pipeline_settings.model_copy(
            update={
                "schema_registry_url": registry.url,
                "backpressure": off,  # no notifications stage here to drain its topics
                "commit_interval_s": 1.0,
                "analytics": SMALL,
            }
        )
        seed_inventory(settings, 200)
        serde = serde_for(settings)
        gen = OrderGenerator(GeneratorConfig(seed=41))
        topic = settings.topic("orders.placed")
        serde.encode(PLACED, gen.make(0), topic=topic)  # registered; later encodes need no I/O
        registry.stop()
        with pipeline.workers(settings, tmp_path / "logs") as fleet:
            workers = [fleet.start("orders"), fleet.start("analytics")]
            for worker in workers:
                worker.wait_ready(timeout=120)
            producer = Producer(settings.confluent_producer())
            orders = [gen.make(n) for n in range(1, count + 1)]
            for order in orders:
                producer.produce(topic, serde.encode(PLACED, order, topic=topic), order["order_id"])
            assert producer.flush(20) == 0
            wait_for(lambda: all(_taken(w) for w in workers), 30, what="both stages took a record")
            time.sleep(6)  # the outage goes on while the records wait
            assert _dead(settings, "orders.dlq") == []
            assert _dead(settings, "analytics.dlq") == []
            for worker in workers:
                assert worker.get_json("/health")["status"] == "ok"
            assert pipeline.outcomes(settings) == {}
            registry.start()
            ids = {order["order_id"] for order in orders}
            found = pipeline.wait_for_outcomes(settings, ids, 60, fleet)
            assert {oid: len(ev) for oid, ev in found.items() if len(ev) != 1} == {}
            wait_for(lambda: _placed_counted(settings) == count, 60, what="analytics counts all")
            pipeline.wait_for_idle(settings, "orders")
            logs = [w.output() for w in workers]
    assert _dead(settings, "orders.dlq") == []
    assert _dead(settings, "analytics.dlq") == []
    for log in logs:
        waits = log.count("no record is dead-lettered for this")
        assert 1 <= waits <= 3, log[-3000:]  # once per 30 s interval per gate, not per record
        assert "answers again" in log
        assert "Timer livelock" not in log  # the event loop never blocked on the registry


def _taken(worker: Any) -> bool:
    return worker.metric("sluice_events_in_total") > 0


def _placed_counted(settings: Settings) -> int:
    """Orders analytics counted in its orders_placed windows so far (late ones included)."""
    windows = pipeline.live_windows(settings)
    return sum(
        w["count"] + w["late_events"] for w in windows.values() if w["metric"] == "orders_placed"
    )
