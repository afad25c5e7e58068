"""One batch of the order stage's work: what it read, and what it writes, once.

The saga and the stock owner handle a batch of events (see `batches.batches`) one event
at a time, and gather what the events make them write instead of writing it at once:

* an order touched twice in a batch (both of its results came in) has its state written
  once, the last one; a later event of the batch reads the gathered state, not the table;
* stock requests go out as one `StockRequests` record per SKU-owner partition, results as
  one `StockResults` record per order partition, so the other agent consumes one record
  per partition and batch instead of one per order line;
* statuses keep the last per order (orders.status is compacted: only the last counts).

`fill` puts everything, changelog records included, into the batch's outbox, which the
agent sends through the app's producer before the batch is acknowledged. No guarantee
rests on the order of the records in it (they go to many partitions, which a crash can
lose independently): nothing is committed before all of them are delivered.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from pipelines.catalog import STOCK_REQUESTS, STOCK_RESULTS
from pipelines.runtime.batches import Outbox, dumps
from pipelines.runtime.faustapp import StageMetrics
from pipelines.serde import Serde
from pipelines.settings import Settings
from pipelines.stages import saga, stock
from pipelines.stages.homing import home_partition

REQUESTS = "sluice.inventory.StockRequests"
RESULTS = "sluice.inventory.StockResults"
NOTIFICATION = "sluice.notifications.NotificationRequested"
STATUS = "sluice.orders.OrderStatus"
OUTCOME_SCHEMAS = {
    "confirmed": "sluice.orders.OrderConfirmed",
    "rejected": "sluice.orders.OrderRejected",
}


class Topics:
    """Where and how the order stage's batches send: physical names, schemas, counts."""

    def __init__(
        self,
        settings: Settings,
        serde: Serde,
        metrics: StageMetrics,
        notification_topics: Mapping[str, str],
    ) -> None:
        self.settings, self.serde, self.metrics = settings, serde, metrics
        self.notification_topics = notification_topics

    def add(
        self,
        outbox: Outbox,
        logical: str,
        key: bytes | None,
        schema: str,
        record: Mapping[str, Any],
        *,
        partition: int | None = None,
    ) -> None:
        """Encode `record` into `outbox`, to `partition` or else the key's (murmur2, as the
        Java client, aiokafka and Faust choose; every pipeline topic has the same count)."""
        physical = self.settings.topic(logical)
        value = self.serde.encode(schema, record, topic=physical)
        if partition is None:
            partition = home_partition(key or b"", self.settings.partitions)
        outbox.add(physical, partition, key, value)
        self.metrics.sent(logical)

    def encode_outcome(self, kind: str, record: Mapping[str, Any]) -> bytes:
        physical = self.settings.topic(f"orders.{kind}")
        return self.serde.encode(OUTCOME_SCHEMAS[kind], record, topic=physical)


class SagaBatch:
    """The saga's reads and writes for one batch of events."""

    def __init__(self, orders: Any, outcomes: Mapping[str, Any]) -> None:
        self.orders, self.outcomes = orders, outcomes
        self.states: dict[bytes, tuple[Any, saga.State]] = {}
        self.ended_now: dict[bytes, tuple[Any, str, dict[str, Any]]] = {}
        self.requests: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.notes: list[dict[str, Any]] = []
        self.statuses: dict[str, dict[str, Any]] = {}
        self.placed: list[Any] = []  # the messages of orders.placed in this batch
        self.logical: list[str] = []  # the topic of every event, for the latency metric

    def state(self, key: bytes) -> saga.State | None:
        """The order's state as this batch left it, else as stored."""
        hit = self.states.get(key)
        return hit[1] if hit is not None else self.orders.data.get(key)

    def ended(self, key: bytes) -> bool:
        """Whether the order's outcome is published (or is, by this batch)."""
        if key in self.ended_now:
            return True
        return any(key in table.data for table in self.outcomes.values())

    def take(self, event: Any, key: bytes, effects: saga.Effects) -> None:
        """Gather what one event makes the saga do."""
        for request in effects.reservations:
            self.requests[request["partition"]].append(request)
        self.notes.extend(effects.notifications)
        if effects.status is not None:
            self.statuses[effects.status["order_id"]] = effects.status
        if effects.state is not None:
            self.states[key] = (event, effects.state)
        if effects.outcome is not None:
            kind, record = effects.outcome
            self.ended_now[key] = (event, kind, record)

    def fill(self, outbox: Outbox, topics: Topics) -> None:
        """Everything to send: requests, notifications, statuses, states and outcomes."""
        for partition, requests in sorted(self.requests.items()):
            topics.add(
                outbox, STOCK_REQUESTS, None, REQUESTS, {"requests": requests}, partition=partition
            )
        for note in self.notes:
            topic = topics.notification_topics[note["channel"]]
            topics.add(outbox, topic, note["notification_id"].encode(), NOTIFICATION, note)
        for order_id, status in self.statuses.items():
            topics.add(outbox, "orders.status", order_id.encode(), STATUS, status)
        for key, (event, state) in self.states.items():
            outbox.put(self.orders, event, key, state, dumps(state))
        for key, (event, kind, record) in self.ended_now.items():
            encoded = topics.encode_outcome(kind, record)
            outbox.put(self.outcomes[kind], event, key, encoded, encoded)
            topics.metrics.sent(f"orders.{kind}")


class StockBatch:
    """The stock owner's decisions and results for one batch of events."""

    def __init__(self, inventory: Any, book: stock.StockBook) -> None:
        self.inventory, self.book = inventory, book
        self.decisions: dict[str, tuple[Any, stock.Decision]] = {}
        self.results: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.forwards: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.partitions: set[int] = set()  # the stock partitions this batch touched
        self.logical: list[str] = []

    def forward(self, request: dict[str, Any], partitions: int) -> None:
        """A v1 request (a restock), to be sent on to its SKU's partition of the requests
        topic: every change of a SKU's stock then comes in one partition of one topic, in
        one order, so a replay after a crash decides the same way."""
        partition = stock.sku_partition(request["lines"][0]["sku"], partitions)
        self.forwards[partition].append(request)

    def decide(
        self,
        event: Any,
        request: Mapping[str, Any],
        now_ms: int,
        pruning: stock.Pruning,
        partitions: int,
    ) -> None:
        """Decide one request (or answer it again from its decision)."""
        key = stock.request_key(request)
        hit = self.decisions.get(key)
        decided = hit[1] if hit is not None else self.inventory.data.get(key.encode())
        step = stock.handle(request, self.book, decided, now_ms=now_ms)
        partition = event.message.partition
        self.partitions.add(partition)
        if step.decision is not None:
            self.decisions[key] = (event, step.decision)
            pruning.add(partition, key, step.decision)
        if step.result is not None:
            home = home_partition(request["order_id"].encode(), partitions)
            self.results[home].append(step.result)

    def fill(self, outbox: Outbox, topics: Topics) -> None:
        """Everything to send: decisions (the changelog), results, forwarded requests."""
        for key, (event, decision) in self.decisions.items():
            outbox.put(self.inventory, event, key.encode(), decision, dumps(decision))
        for partition, results in sorted(self.results.items()):
            topics.add(
                outbox, STOCK_RESULTS, None, RESULTS, {"results": results}, partition=partition
            )
        for partition, requests in sorted(self.forwards.items()):
            topics.add(
                outbox, STOCK_REQUESTS, None, REQUESTS, {"requests": requests}, partition=partition
            )
