"""The order stage: `faust -A pipelines.orders:app worker` (or `sluice worker orders`).

Two agents, one consumer group (`sluice-orders`):

* `saga` reads orders.placed and the stock results (both keyed by order id, so one
  worker owns all of an order's events), keeps each order's saga state in the `orders`
  table and publishes the outcome;
* `inventory` reads the stock requests (one partition per set of SKUs, so one worker
  owns a SKU's stock) and keeps its decisions, each with the levels it set, in the
  `inventory` table; the per-SKU levels are an index rebuilt from them on recovery.

Both agents take their events in batches of what has arrived (`batches`). A batch sends
one stock request record per SKU partition (one request per order and partition), one
result record per order partition, and one state record per order it touched; all of
it, changelog records included, goes through the app's producer before the batch is
acknowledged (`Ledger`), so Faust's commit, which flushes that producer first, never
commits an offset whose effects could be lost.

Processing is at-least-once (Faust's exactly_once mode is not used: in faust-streaming
it binds transactions to output partitions, which breaks for repartitioning topologies
like this one). Exactly-once *outcomes* come from the tables instead: `confirmed` and
`rejected` are tables whose changelog topics are orders.confirmed and orders.rejected
themselves, so writing the outcome and remembering that the order has ended are a
single record. After a crash the tables are restored from those topics, and a replayed
event finds its order already ended. Statuses (orders.status) are plain outputs: nothing
reads them back here.

A placement that is not in its order id's partition under its order id as key (a
keyless record from Kafka Connect or a console producer, another key, another
partitioner) is re-keyed through the app's own repartition topic (`PLACED_REKEYED`,
co-partitioned with the results) before the saga touches any stock; see
`pipelines.stages.homing`. Re-producing it onto orders.placed instead would count it
twice in analytics and in the intake's recovery, which read that topic too.

`create_app(settings)` builds one app with everything it owns (`OrdersStage`); the
module's `app` is the one built from the environment's settings, for `faust -A`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import faust

from pipelines.backpressure import EDGES
from pipelines.catalog import PLACED_REKEYED, STOCK_REQUESTS, STOCK_RESULTS
from pipelines.catalog import get as catalog_topic
from pipelines.errors import RecordError, RecordRef
from pipelines.runtime import controller as backpressure_controller
from pipelines.runtime import make_current, short_fetch_waits
from pipelines.runtime.batches import Ledger, batches
from pipelines.runtime.deadletter import redriven_for_another
from pipelines.runtime.faustapp import JSON_STATE, RAW_SCHEMA, now_ms, record_ref
from pipelines.runtime.kit import build_kit
from pipelines.runtime.orderbatch import REQUESTS, RESULTS, SagaBatch, StockBatch, Topics
from pipelines.runtime.startup import stage_settings
from pipelines.settings import Settings
from pipelines.stages import saga, stock
from pipelines.stages.homing import REKEYED_HEADER, at_home, home_partition
from pipelines.topology import CHANNEL_TOPICS, stage

log = logging.getLogger(__name__)

PLACED = "sluice.orders.OrderPlaced"
RESULT = "sluice.inventory.ReservationResult"  # v1, one line: before requests were grouped
REQUEST = "sluice.inventory.ReservationRequested"  # v1, one line: restocks
MAX_BATCH = 500  # events per batch at most
NOTIFICATION_TOPICS = CHANNEL_TOPICS
OUTPUTS = stage("orders").outputs
#: What the stage writes, by schema: its catalog outputs and its two internal topics.
SCHEMA_OUTPUTS = (
    *((str(catalog_topic(t).value_schema), t) for t in OUTPUTS),
    (REQUESTS, STOCK_REQUESTS),
    (RESULTS, STOCK_RESULTS),
)


class OrdersStage:
    """One order app and all it owns: topics, tables, controller, stock book, senders.

    Nothing here is shared with another app: two stages built from two settings (another
    topic prefix, another data directory) run side by side in one process. Every record
    the stage writes goes through the app's producer (`Ledger` for a batch's outbox, the
    kit's `send` for re-keyed placements and dead letters).
    """

    def __init__(self, settings: Settings) -> None:
        self.kit = kit = build_kit("orders", settings)
        self.settings, self.app = settings, kit.app
        self.serde, self.metrics, self.dead_letters = kit.serde, kit.metrics, kit.dead_letters
        short_fetch_waits(self.app)
        self.config = saga.SagaConfig(
            decline_rate=settings.orders.decline_rate, partitions=settings.partitions
        )
        self.saga_input = kit.inputs(
            "orders.placed", "inventory.results", PLACED_REKEYED, STOCK_RESULTS
        )
        self.stock_input = kit.inputs("inventory.reservations", STOCK_REQUESTS)
        self.ledger = Ledger(self.app)
        self.schema_gate = kit.schema_gate(SCHEMA_OUTPUTS)
        self.rekeyed_topic = settings.topic(PLACED_REKEYED)
        self.orders = kit.table("orders", JSON_STATE)
        self.inventory = kit.table("inventory", JSON_STATE)
        self.outcomes = {
            kind: kit.table(kind, RAW_SCHEMA, f"orders.{kind}")
            for kind in ("confirmed", "rejected")
        }
        self.topics = Topics(settings, self.serde, self.metrics, NOTIFICATION_TOPICS)
        self.book = stock.StockBook()
        self.pruning = stock.Pruning(settings.orders.request_retention_s * 1000)
        self.controller = backpressure_controller.install(  # its timer and signal hooks
            self.app, settings, EDGES["orders"], ["orders.placed"], self.metrics
        )

    def install(self) -> faust.App:
        """Add the web views, the agents and the recovery hook to the app (once); returns
        the app."""
        app = self.app
        self.kit.install_web({"orders": self.orders, "inventory": self.inventory, **self.outcomes})
        # Named as they were when they were module functions: logs and /health name them.
        app.agent(self.saga_input, name=f"{__name__}.order_saga")(self.order_saga)
        app.agent(self.stock_input, name=f"{__name__}.inventory_owner")(self.inventory_owner)
        self.inventory.on_recover(self.rebuild_stock)
        return app

    async def order_saga(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Validate, reserve, pay and end each order; see `pipelines.stages.saga`."""
        async for events in batches(stream, MAX_BATCH):
            started = time.perf_counter()
            batch = SagaBatch(self.orders, self.outcomes)
            for event in events:
                await self._saga_event(event, batch)
            outbox = self.ledger.outbox()
            batch.fill(outbox, self.topics)
            await outbox.send()
            for message in batch.placed:  # handled and sent: acknowledged next
                self.controller.taken(message.topic, message.partition, message.offset)
            self._observe(batch.logical, started)
            yield None

    def _observe(self, logical: list[str], started: float) -> None:
        each = (time.perf_counter() - started) / max(1, len(logical))
        latency = self.metrics.latency
        for name in logical:
            latency.labels("orders", name).observe(each)

    async def _saga_event(self, event: faust.EventT[bytes], batch: SagaBatch) -> None:
        message = event.message
        logical = self.settings.logical_topic(message.topic)
        self.metrics.received(logical)
        batch.logical.append(logical)
        if logical == "orders.placed":
            batch.placed.append(message)
        if redriven_for_another(event.headers, "orders.dlq"):
            return  # analytics' dead letter, redriven to orders.placed: not ours
        if self.schema_gate.blocked(message.value):
            await self.schema_gate.ready(message.value)  # a registry outage waits, never DLQs
        make_current(event)
        ref = record_ref(event)
        if logical == STOCK_RESULTS:
            await self._results(event, ref, batch)
            return
        serde = self.serde
        try:
            if logical == "inventory.results":
                result = saga.as_group(serde.decode(ref.value or b"", RESULT, source=ref))
                source = (logical, ref.partition, ref.offset)
                self._saga_step(event, batch, ref.key or b"", saga.on_result, result, source=source)
                return
            record = serde.decode(ref.value or b"", PLACED, source=ref)
            order_id = record["order_id"].encode()
            if not at_home(ref.key, ref.partition, order_id, self.settings.partitions):
                await self._rekey(ref, order_id, from_rekeyed=logical == PLACED_REKEYED)
                return
            source = (logical, ref.partition, ref.offset)
            self._saga_step(event, batch, order_id, saga.on_placed, record, source=source)
        except RecordError as exc:
            await self.dead_letters.write(ref, str(exc))
        except Exception as exc:  # a bug on one record must not stop the partition
            log.exception("poison record %s[%s]@%s", ref.topic, ref.partition, ref.offset)
            await self.dead_letters.write(ref, f"{type(exc).__name__}: {exc}")

    async def _results(self, event: faust.EventT[bytes], ref: RecordRef, batch: SagaBatch) -> None:
        """A batch of stock results: each entry is one order's (one source of its own)."""
        try:
            record = self.serde.decode(ref.value or b"", RESULTS, source=ref)
        except RecordError as exc:
            await self.dead_letters.write(ref, str(exc))
            return

        def step(index: int, result: dict[str, Any]) -> None:
            source = (STOCK_RESULTS, ref.partition, ref.offset, index)
            key = result["order_id"].encode()
            self._saga_step(event, batch, key, saga.on_result, result, source=source)

        await self._each_entry(ref, record["results"], step)

    async def _each_entry(
        self, ref: RecordRef, entries: list[dict[str, Any]], apply: Callable[[int, Any], None]
    ) -> None:
        """Apply each entry of a grouped record (stock requests or results, each one
        order's); a poison entry is logged and the others go on; one letter names them all."""
        failed = []
        for index, entry in enumerate(entries):
            try:
                apply(index, entry)
            except Exception as exc:  # the other entries go on; the letter names this one
                log.exception(
                    "poison entry %d of %s[%s]@%s", index, ref.topic, ref.partition, ref.offset
                )
                failed.append(f"entry {index}: {type(exc).__name__}: {exc}")
        if failed:
            await self.dead_letters.write(ref, "; ".join(failed))

    def _saga_step(
        self,
        event: faust.EventT[bytes],
        batch: SagaBatch,
        key: bytes,
        step: Any,
        record: dict[str, Any],
        *,
        source: saga.Source,
    ) -> None:
        effects: saga.Effects = step(
            batch.state(key),
            record,
            terminal=batch.ended(key),
            source=source,
            now_ms=now_ms(),
            config=self.config,
        )
        if effects.note:
            log.debug("order %s: %s", key.decode(errors="replace"), effects.note)
        batch.take(event, key, effects)
        if effects.state is not None:  # placed and valid: open; decided: closed
            open_ = "decided" not in effects.state
            self.controller.track(event.message.partition, key, open_=open_)

    async def _rekey(self, ref: RecordRef, order_id: bytes, *, from_rekeyed: bool) -> None:
        """Send a stray placement, unchanged, to its order id's partition of the repartition
        topic (the default partitioner is the same murmur2 as the results')."""
        partitions = self.settings.partitions
        if from_rekeyed:  # only if the topics' partition counts disagree: never loop
            home = home_partition(order_id, partitions)
            raise RecordError(
                f"re-keyed order {order_id.decode(errors='replace')} arrived in partition "
                f"{ref.partition}, not {home}: {self.rekeyed_topic} and the saga's other "
                f"inputs must have {partitions} partitions",
                ref,
            )
        origin = f"{ref.topic}[{ref.partition}]@{ref.offset}".encode()
        await self.kit.send(self.rekeyed_topic, order_id, ref.value, [(REKEYED_HEADER, origin)])
        self.metrics.sent(PLACED_REKEYED)
        log.debug("order %s re-keyed from %s", order_id.decode(errors="replace"), origin.decode())

    async def inventory_owner(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Apply stock requests once each; see `pipelines.stages.stock`."""
        async for events in batches(stream, MAX_BATCH):
            started = time.perf_counter()
            batch = StockBatch(self.inventory, self.book)
            for event in events:
                await self._stock_event(event, batch)
            outbox = self.ledger.outbox()
            batch.fill(outbox, self.topics)
            for partition in batch.partitions:
                self.pruning.prune(partition, self.book, outbox, self.inventory, now_ms())
            await outbox.send()
            self._observe(batch.logical, started)
            yield None

    async def _stock_event(self, event: faust.EventT[bytes], batch: StockBatch) -> None:
        logical = self.settings.logical_topic(event.message.topic)
        self.metrics.received(logical)
        batch.logical.append(logical)
        ref = record_ref(event)
        if self.schema_gate.blocked(ref.value):
            await self.schema_gate.ready(ref.value)
        make_current(event)
        v1 = logical == "inventory.reservations"
        try:
            record = self.serde.decode(ref.value or b"", REQUEST if v1 else REQUESTS, source=ref)
        except RecordError as exc:
            await self.dead_letters.write(ref, str(exc))
            return
        partitions = self.settings.partitions
        if v1:  # restocks: into the requests topic, so one topic orders all of a SKU's changes
            batch.forward(stock.as_group(record), partitions)
            return
        pruning = self.pruning
        await self._each_entry(
            ref,
            record["requests"],
            lambda _index, request: batch.decide(event, request, now_ms(), pruning, partitions),
        )

    async def rebuild_stock(self) -> None:
        """The per-SKU levels and the pruning queues again, from this worker's decisions."""
        inventory, partitions = self.inventory, self.settings.partitions
        topic = inventory.changelog_topic_name
        assigned = self.app.assignor.assigned_actives()
        mine = {tp.partition for tp in assigned if tp.topic == topic}
        entries = []
        for raw_key, value in inventory.data.items():
            key = raw_key.decode(errors="replace")
            if stock.partition_of(key, value, partitions) in mine:
                entries.append((key, value))
        self.book.rebuild(entries)
        self.pruning.rebuild(entries, partitions)
        log.debug("stock of %d SKUs rebuilt from %d decisions", len(self.book.levels), len(entries))


def create_app(settings: Settings) -> faust.App:
    """An order app built from `settings`, owning all its state (`OrdersStage`)."""
    return OrdersStage(settings).install()


app = create_app(stage_settings())  # bad settings: one line, no traceback
