"""`sluice dlq redrive` for orders.dlq and analytics.dlq: back to the source topic, once.

The dead letters are written as the stages write them (`dlq_headers`, value and key
unchanged): a restock dead-lettered during a registry outage, an order whose header
names its source by the physical (prefixed) topic, an analytics letter, and garbage.
"""

from __future__ import annotations

import io
import json
import sys
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from pipelines.cli import run
from pipelines.errors import RecordRef
from pipelines.runtime.deadletter import dlq_headers
from pipelines.serde import serde_for
from pipelines.settings import Settings
from producers.inventory import restock_request

REQUEST = "sluice.inventory.ReservationRequested"
PLACED = "sluice.orders.OrderPlaced"
OUTAGE = "schema id 4 not available from the registry: connection refused"


def _order(order_id: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": "C-1",
        "lines": [],
        "currency": "EUR",
        "total_cents": 0,
        "placed_at": int(time.time() * 1000),
    }


def _dead_letter(
    producer: Producer, settings: Settings, dlq: str, source: str, key: bytes, value: bytes
) -> None:
    """A dead letter exactly as a stage writes it; `source` as the header will name it."""
    ref = RecordRef(source, 1, 17, key, value)
    stage = dlq.split(".", maxsplit=1)[0]
    producer.produce(settings.topic(dlq), value, key, headers=dlq_headers(ref, OUTAGE, stage))


def _records(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None, dict]]:
    """Every record of `topic` now: key, value and headers."""
    physical = settings.topic(topic)
    consumer = Consumer(settings.confluent(**{"group.id": "redrive-check"}))
    out = []
    try:
        for p in range(settings.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(physical, p), timeout=10)
            if high == low:
                continue
            consumer.assign([TopicPartition(physical, p, low)])
            while len([r for r in out if r[3] == p]) < high - low:
                msg = consumer.poll(5)
                assert msg is not None, f"{physical}[{p}] ran dry"
                out.append((msg.key(), msg.value(), dict(msg.headers() or []), p))
    finally:
        consumer.close()
    return [(k, v, h) for k, v, h, _ in out]


def _cli_json(argv: list[str]) -> Any:
    out, real = io.StringIO(), sys.stdout
    sys.stdout = out
    try:
        assert run([*argv, "--json"]) == 0
    finally:
        sys.stdout = real
    return json.loads(out.getvalue())


def test_a_dead_letter_goes_back_to_its_source_once(
    pipeline_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = pipeline_settings
    began_ms = int(time.time() * 1000) - 1000
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("SLUICE_TOPIC_PREFIX", settings.topic_prefix)
    serde = serde_for(settings)
    restock = restock_request("SKU-00007", 40, "outage", int(time.time() * 1000))
    restock_value = serde.encode(REQUEST, restock, topic=settings.topic("inventory.reservations"))
    order_value = serde.encode(PLACED, _order("R-1"), topic=settings.topic("orders.placed"))
    late_value = serde.encode(PLACED, _order("R-2"), topic=settings.topic("orders.placed"))
    producer = Producer(settings.confluent_producer())
    _dead_letter(
        producer, settings, "orders.dlq", "inventory.reservations", b"SKU-00007", restock_value
    )
    physical_source = settings.topic("orders.placed")  # the header's newer, prefixed form
    _dead_letter(producer, settings, "orders.dlq", physical_source, b"R-1", order_value)
    _dead_letter(producer, settings, "orders.dlq", "orders.placed", b"junk", b"\x00garbage")
    _dead_letter(producer, settings, "analytics.dlq", "orders.placed", b"R-2", late_value)
    assert producer.flush(10) == 0

    listed = _cli_json(["dlq", "list"])
    assert sorted((r["dlq"], r["redrivable"]) for r in listed) == [
        ("analytics.dlq", True),
        ("orders.dlq", False),
        ("orders.dlq", True),
        ("orders.dlq", True),
    ]
    assert {r["reason"] for r in listed} == {OUTAGE}

    first = _cli_json(["dlq", "redrive"])
    assert first["by_source_topic"] == {"inventory.reservations": 1, "orders.placed": 2}
    assert (first["requeued"], first["skipped_undecodable"]) == (3, 1)
    assert first["skipped_already_redriven"] == 0
    stock = _records(settings, "inventory.reservations")
    assert [(k, v) for k, v, _ in stock] == [(b"SKU-00007", restock_value)]
    assert stock[0][2]["sluice.redrive"].decode().startswith("orders.dlq:")
    placed = sorted(_records(settings, "orders.placed"))
    assert [(k, v) for k, v, _ in placed] == [(b"R-1", order_value), (b"R-2", late_value)]

    assert run(["dlq", "redrive"]) == 0  # the second time: nothing sent, and it says so
    out = capsys.readouterr().out
    assert "re-queued 0" in out
    assert "skipped 3 already redriven" in out
    again = _cli_json(["dlq", "redrive", "--dlq", "orders"])
    assert (again["requeued"], again["skipped_already_redriven"]) == (0, 2)
    assert len(_records(settings, "inventory.reservations")) == 1
    assert len(_records(settings, "orders.placed")) == 2

    # Analytics counted R-1 when it was placed (only the order stage dead-lettered it), so
    # the copy redriven from orders.dlq is not for it; R-2 left analytics.dlq and is. The
    # live stage and replay skip by the same test, so replay still equals live.
    replayed = _cli_json(
        ["replay", "--from", str(began_ms), "--to", str(int(time.time() * 1000) + 1000)]
    )
    assert (replayed["events"], replayed["other_stages_redrives"]) == (1, 1)
