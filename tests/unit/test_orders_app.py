"""The order stage's wiring, in process: real encoded events through its two Faust agents
(`agent.test_context()`, no broker), and two apps built side by side sharing nothing.

What the stage sends is recorded at the app's producer (`tests.support.stageapp`), so an
order is followed around its whole round trip by hand: the placement to the stock
requests, the requests to the stock results, the results to the order's outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faust.events import Event

from pipelines.catalog import PLACED_REKEYED, STOCK_REQUESTS, STOCK_RESULTS
from pipelines.orders import OrdersStage, create_app
from pipelines.settings import OrdersSettings, Settings
from pipelines.stages.homing import home_partition
from tests.support.stageapp import (
    RecordingProducer,
    Sent,
    app_topics,
    built_apart,
    drive,
    event,
    record_sends,
)

NOW = int(time.time() * 1000)
REQUESTS = "sluice.inventory.StockRequests"
RESULTS = "sluice.inventory.StockResults"


def _settings(tmp_path: Path, prefix: str = "t.") -> Settings:
    return Settings(
        data_dir=tmp_path / prefix,
        topic_prefix=prefix,
        store="memory://",
        orders=OrdersSettings(decline_rate=0.0),
    )


@pytest.fixture
def stage(tmp_path: Path) -> OrdersStage:
    stage = OrdersStage(_settings(tmp_path))
    stage.install()
    return stage


@pytest.fixture
def out(stage: OrdersStage) -> RecordingProducer:
    return record_sends(stage.app)


def _order(order_id: str, skus: dict[str, int]) -> dict[str, Any]:
    lines = [{"sku": s, "quantity": q, "unit_price_cents": 250} for s, q in skus.items()]
    return {
        "order_id": order_id,
        "customer_id": "C-1",
        "lines": lines,
        "currency": "EUR",
        "total_cents": 250 * sum(skus.values()),
        "placed_at": NOW - 1000,
        "channel": "WEB",
        "client_ref": None,
    }


def _restock(sku: str, quantity: int) -> dict[str, Any]:
    return {
        "requests": [
            {
                "order_id": f"restock-{sku}",
                "action": "RESTOCK",
                "line_count": 1,
                "requested_at": NOW - 5000,
                "lines": [{"line_index": 0, "sku": sku, "quantity": quantity}],
            }
        ]
    }


def _placed(stage: OrdersStage, order: dict[str, Any], offset: int, key: bytes) -> Event:
    """A placement as the intake writes it: keyed by its order id, in that key's partition."""
    value = stage.serde.encode("sluice.orders.OrderPlaced", order)
    partition = home_partition(order["order_id"].encode(), stage.settings.partitions)
    topic = stage.settings.topic("orders.placed")
    return event(stage.app, topic, partition, offset, value, NOW, key=key)


def _passed_on(stage: OrdersStage, records: list[Sent]) -> list[Event]:
    """The stage's own records (stock requests or results) as its consumer reads them."""
    return [
        event(stage.app, r.topic, r.partition or 0, offset, r.value or b"", NOW, key=r.key or b"")
        for offset, r in enumerate(records)
    ]


def _saga(stage: OrdersStage, events: list[Event], done: Callable[[], bool]) -> None:
    drive(stage.app.agents["pipelines.orders.order_saga"], events, done, "saga events handled")


def _stock(stage: OrdersStage, events: list[Event], done: Callable[[], bool]) -> None:
    agent = stage.app.agents["pipelines.orders.inventory_owner"]
    drive(agent, events, done, "stock requests handled")


def _seed(stage: OrdersStage, sku: str, quantity: int) -> None:
    """Restock `sku` through the stock agent, as `sluice seed-inventory` does."""
    seed = stage.serde.encode(REQUESTS, _restock(sku, quantity))
    requests = stage.settings.topic(STOCK_REQUESTS)
    done = lambda: stage.book.available(sku) is not None  # noqa: E731
    _stock(stage, [event(stage.app, requests, 0, 0, seed, NOW)], done)


def _decoded(stage: OrdersStage, sent: list[Sent], schema: str) -> list[dict[str, Any]]:
    return [stage.serde.decode(s.value or b"", schema) for s in sent]


def test_a_placed_order_goes_round_the_stock_and_ends_confirmed(
    stage: OrdersStage, out: RecordingProducer
) -> None:
    topic = stage.settings.topic
    seed = stage.serde.encode(REQUESTS, _restock("SKU-00001", 10))
    _stock(
        stage, [event(stage.app, topic(STOCK_REQUESTS), 0, 0, seed, NOW)], lambda: bool(out.sent)
    )
    assert stage.book.available("SKU-00001") == 10
    assert out.on(topic(STOCK_RESULTS)) == []  # restocks answer nobody

    order = _order("O-1", {"SKU-00001": 3})
    _saga(stage, [_placed(stage, order, 7, b"O-1")], lambda: bool(out.on(topic(STOCK_REQUESTS))))
    [requests] = _decoded(stage, out.on(topic(STOCK_REQUESTS)), REQUESTS)
    assert [(r["order_id"], r["action"]) for r in requests["requests"]] == [("O-1", "RESERVE")]
    [status] = _decoded(stage, out.on(topic("orders.status")), "sluice.orders.OrderStatus")
    assert status["status"] == "ACCEPTED"
    assert stage.orders.data.get(b"O-1") is not None  # the saga's state, in its table
    assert stage.controller.inflight  # an open order: backpressure counts it

    asked = _passed_on(stage, out.on(topic(STOCK_REQUESTS)))
    _stock(stage, asked, lambda: bool(out.on(topic(STOCK_RESULTS))))
    assert stage.book.available("SKU-00001") == 7
    [results] = _decoded(stage, out.on(topic(STOCK_RESULTS)), RESULTS)
    assert [line["outcome"] for line in results["results"][0]["lines"]] == ["APPLIED"]

    answered = _passed_on(stage, out.on(topic(STOCK_RESULTS)))
    _saga(stage, answered, lambda: bool(out.on(topic("orders.confirmed"))))
    [confirmed] = out.on(topic("orders.confirmed"))  # the outcome table's changelog
    assert confirmed.key == b"O-1"
    paid = stage.serde.decode(confirmed.value or b"", "sluice.orders.OrderConfirmed")
    assert paid["total_cents"] == 750
    notes = [s for s in out.sent if s.topic.startswith("t.notifications.")]
    assert notes
    assert all(s.key and s.key.startswith(b"O-1:") for s in notes)
    assert out.on(topic("orders.rejected")) == []
    received = {"stage": "orders", "topic": "orders.placed"}
    assert stage.metrics.registry.get_sample_value("sluice_events_in_total", received) == 1


def test_an_order_beyond_the_stock_is_rejected(stage: OrdersStage, out: RecordingProducer) -> None:
    topic = stage.settings.topic
    seed = stage.serde.encode(REQUESTS, _restock("SKU-00099", 1))
    _stock(
        stage, [event(stage.app, topic(STOCK_REQUESTS), 0, 0, seed, NOW)], lambda: bool(out.sent)
    )
    _saga(
        stage,
        [_placed(stage, _order("O-2", {"SKU-00099": 2}), 0, b"O-2")],
        lambda: bool(out.on(topic(STOCK_REQUESTS))),
    )
    _stock(
        stage,
        _passed_on(stage, out.on(topic(STOCK_REQUESTS))),
        lambda: bool(out.on(topic(STOCK_RESULTS))),
    )
    _saga(
        stage,
        _passed_on(stage, out.on(topic(STOCK_RESULTS))),
        lambda: bool(out.on(topic("orders.rejected"))),
    )
    [rejected] = out.on(topic("orders.rejected"))
    record = stage.serde.decode(rejected.value or b"", "sluice.orders.OrderRejected")
    assert (record["order_id"], record["reason"]) == ("O-2", "OUT_OF_STOCK")


def test_a_stray_placement_is_rekeyed_and_a_bad_record_dead_lettered(
    stage: OrdersStage, out: RecordingProducer
) -> None:
    topic = stage.settings.topic
    stray = _placed(stage, _order("O-3", {"SKU-00001": 1}), 4, b"not-the-order-id")
    garbage = event(stage.app, topic("orders.placed"), 0, 5, b"\x00garbage", NOW)
    _saga(stage, [stray, garbage], lambda: bool(out.on(topic("orders.dlq"))))
    [rekeyed] = out.on(topic(PLACED_REKEYED))
    assert rekeyed.key == b"O-3"
    assert rekeyed.value == stray.message.value  # unchanged
    assert rekeyed.headers["sluice.rekeyed.from"].endswith(b"@4")
    [letter] = out.on(topic("orders.dlq"))
    assert letter.value == b"\x00garbage"
    assert letter.headers["sluice.source.offset"] == b"5"
    assert out.on(topic(STOCK_REQUESTS)) == []  # no stock touched by either


def test_two_apps_from_two_settings_share_nothing(tmp_path: Path) -> None:
    parts = ("book", "pruning", "orders", "inventory", "metrics", "controller", "ledger")
    one, two = built_apart(
        lambda prefix: create_app(_settings(tmp_path, prefix)),
        "pipelines.orders.order_saga",
        (*parts, "dead_letters", "schema_gate", "topics"),
    )
    assert isinstance(one, OrdersStage)
    assert one.app.conf.id == "a.sluice-orders"
    assert len(app_topics(one.app)) == 10  # six inputs, four changelogs (two outcome topics)
    assert one.app.conf.datadir != two.app.conf.datadir

    record_sends(one.app)
    _seed(one, "SKU-00001", 5)
    assert one.book.available("SKU-00001") == 5
    assert two.book.available("SKU-00001") is None
    assert len(two.inventory.data) == 0
