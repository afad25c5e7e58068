"""Seeded stock goes where the stock owner reads every change of a SKU, in the SKU's
partition: a seed sent anywhere else (inventory.reservations, forwarded by the stock
owner) could be overtaken by the first order's reservation, which then ended INVALID."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines import domain
from pipelines.catalog import STOCK_REQUESTS
from pipelines.serde import serde_for
from pipelines.settings import Settings
from pipelines.stages import stock
from producers import inventory
from producers.sender import SendStats


class Sent:
    def __init__(self, _settings: Settings) -> None:
        self.records: list[tuple[str, bytes | None, bytes, int]] = []
        SENDERS.append(self)

    def send(self, topic: str, key: bytes | None, value: bytes, partition: int = -1) -> None:
        self.records.append((topic, key, value, partition))

    def close(self) -> SendStats:
        return SendStats()


SENDERS: list[Sent] = []


def test_restocks_go_to_each_skus_partition_of_the_stock_requests_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(topic_prefix="t.")
    monkeypatch.setattr(inventory, "EventSender", Sent)
    monkeypatch.setattr(inventory, "require_topics", lambda *_a: None)
    inventory.seed_inventory(settings, 20, scale=3)
    records = SENDERS[-1].records
    assert len(records) == 20
    serde = serde_for(settings)
    for index, (topic, key, value, partition) in enumerate(records):
        sku = domain.sku_code(index)
        assert topic == settings.topic(STOCK_REQUESTS)
        assert key == sku.encode()
        assert partition == stock.sku_partition(sku, settings.partitions)
        decoded: Any = serde.decode(value, inventory.SCHEMA)
        (request,) = decoded["requests"]
        assert request["action"] == "RESTOCK"
        assert request["order_id"] == f"restock-initial-{sku}"
        assert request["lines"] == [
            {"line_index": 0, "sku": sku, "quantity": domain.initial_stock(sku) * 3}
        ]
