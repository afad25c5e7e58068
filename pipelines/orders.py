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
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import faust

from pipelines.backpressure import EDGES
from pipelines.catalog import PLACED_REKEYED, STOCK_REQUESTS, STOCK_RESULTS
from pipelines.catalog import get as catalog_topic
from pipelines.errors import RecordError, RecordRef
from pipelines.runtime import controller as backpressure_controller
from pipelines.runtime import make_current, short_fetch_waits
from pipelines.runtime.batches import Ledger, batches
from pipelines.runtime.deadletter import DeadLetters, redriven_for_another
from pipelines.runtime.faustapp import (
    JSON_STATE,
    RAW,
    RAW_SCHEMA,
    DirectSender,
    StageMetrics,
    install_web,
    make_app,
    now_ms,
    record_ref,
    table,
)
from pipelines.runtime.orderbatch import REQUESTS, RESULTS, SagaBatch, StockBatch, Topics
from pipelines.runtime.schemagate import SchemaGate
from pipelines.runtime.startup import stage_settings
from pipelines.serde import serde_for
from pipelines.stages import saga, stock
from pipelines.stages.homing import REKEYED_HEADER, at_home, home_partition
from pipelines.topology import CHANNEL_TOPICS, stage

log = logging.getLogger(__name__)

PLACED = "sluice.orders.OrderPlaced"
RESULT = "sluice.inventory.ReservationResult"  # v1, one line: before requests were grouped
REQUEST = "sluice.inventory.ReservationRequested"  # v1, one line: restocks
MAX_BATCH = 500  # events per batch at most

settings = stage_settings()  # bad settings: one line, no traceback
serde = serde_for(settings, client_retries=0)  # the schema gate retries, off the event loop
config = saga.SagaConfig(decline_rate=settings.orders.decline_rate, partitions=settings.partitions)
metrics = StageMetrics("orders")
app = make_app("orders", settings)
short_fetch_waits(app)


def _topic(name: str, **kw: Any) -> faust.TopicT:
    return app.topic(settings.topic(name), partitions=settings.partitions, **RAW, **kw)


saga_input = app.topic(
    settings.topic("orders.placed"),
    settings.topic("inventory.results"),
    settings.topic(PLACED_REKEYED),
    settings.topic(STOCK_RESULTS),
    **RAW,
)
stock_input = app.topic(
    settings.topic("inventory.reservations"), settings.topic(STOCK_REQUESTS), **RAW
)
sender = DirectSender(app)
ledger = Ledger(app)
dead_letters = DeadLetters(
    "orders", settings.topic("orders.dlq"), sender.send, metrics.dead_letters
)
NOTIFICATION_TOPICS = CHANNEL_TOPICS
OUTPUTS = stage("orders").outputs
schema_gate = SchemaGate(
    serde,
    [(str(catalog_topic(t).value_schema), settings.topic(t)) for t in OUTPUTS]
    + [(REQUESTS, settings.topic(STOCK_REQUESTS)), (RESULTS, settings.topic(STOCK_RESULTS))],
)
REKEYED_TOPIC = settings.topic(PLACED_REKEYED)

orders = table(app, "orders", JSON_STATE)
inventory = table(app, "inventory", JSON_STATE)
outcomes = {
    kind: table(app, kind, RAW_SCHEMA, _topic(f"orders.{kind}"))
    for kind in ("confirmed", "rejected")
}
install_web(app, metrics, {"orders": orders, "inventory": inventory, **outcomes})
controller = backpressure_controller.install(
    app, settings, EDGES["orders"], ["orders.placed"], metrics
)
topics = Topics(settings, serde, metrics, NOTIFICATION_TOPICS)
book = stock.StockBook()
pruning = stock.Pruning(settings.orders.request_retention_s * 1000)


@app.agent(saga_input)
async def order_saga(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    """Validate, reserve, pay and end each order; see `pipelines.stages.saga`."""
    async for events in batches(stream, MAX_BATCH):
        started = time.perf_counter()
        batch = SagaBatch(orders, outcomes)
        for event in events:
            await _saga_event(event, batch)
        outbox = ledger.outbox()
        batch.fill(outbox, topics)
        await outbox.send()
        for message in batch.placed:  # handled and sent: acknowledged next
            controller.taken(message.topic, message.partition, message.offset)
        _observe(batch.logical, started)
        yield None


def _observe(logical: list[str], started: float) -> None:
    each = (time.perf_counter() - started) / max(1, len(logical))
    for name in logical:
        metrics.latency.labels("orders", name).observe(each)


async def _saga_event(event: faust.EventT[bytes], batch: SagaBatch) -> None:
    message = event.message
    logical = settings.logical_topic(message.topic)
    metrics.received(logical)
    batch.logical.append(logical)
    if logical == "orders.placed":
        batch.placed.append(message)
    if redriven_for_another(event.headers, "orders.dlq"):
        return  # analytics' dead letter, redriven to orders.placed: not ours
    if schema_gate.blocked(message.value):
        await schema_gate.ready(message.value)  # a registry outage waits, never DLQs
    make_current(event)
    ref = record_ref(event)
    if logical == STOCK_RESULTS:
        await _results(event, ref, batch)
        return
    try:
        if logical == "inventory.results":
            result = saga.as_group(serde.decode(ref.value or b"", RESULT, source=ref))
            source = (logical, ref.partition, ref.offset)
            _saga_step(event, batch, ref.key or b"", saga.on_result, result, source=source)
            return
        record = serde.decode(ref.value or b"", PLACED, source=ref)
        order_id = record["order_id"].encode()
        if not at_home(ref.key, ref.partition, order_id, settings.partitions):
            await _rekey(ref, order_id, from_rekeyed=logical == PLACED_REKEYED)
            return
        source = (logical, ref.partition, ref.offset)
        _saga_step(event, batch, order_id, saga.on_placed, record, source=source)
    except RecordError as exc:
        await dead_letters.write(ref, str(exc))
    except Exception as exc:  # a bug on one record must not stop the partition
        log.exception("poison record %s[%s]@%s", ref.topic, ref.partition, ref.offset)
        await dead_letters.write(ref, f"{type(exc).__name__}: {exc}")


async def _results(event: faust.EventT[bytes], ref: RecordRef, batch: SagaBatch) -> None:
    """A batch of stock results: each entry is one order's (one source of its own)."""
    try:
        record = serde.decode(ref.value or b"", RESULTS, source=ref)
    except RecordError as exc:
        await dead_letters.write(ref, str(exc))
        return
    failed = []
    for index, result in enumerate(record["results"]):
        source = (STOCK_RESULTS, ref.partition, ref.offset, index)
        try:
            _saga_step(
                event, batch, result["order_id"].encode(), saga.on_result, result, source=source
            )
        except Exception as exc:  # the other entries go on; the letter names this one
            log.exception(
                "poison entry %d of %s[%s]@%s", index, ref.topic, ref.partition, ref.offset
            )
            failed.append(f"entry {index}: {type(exc).__name__}: {exc}")
    if failed:
        await dead_letters.write(ref, "; ".join(failed))


def _saga_step(
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
        config=config,
    )
    if effects.note:
        log.debug("order %s: %s", key.decode(errors="replace"), effects.note)
    batch.take(event, key, effects)
    if effects.state is not None:  # placed and valid: open; decided: closed
        controller.track(event.message.partition, key, open_="decided" not in effects.state)


async def _rekey(ref: RecordRef, order_id: bytes, *, from_rekeyed: bool) -> None:
    """Send a stray placement, unchanged, to its order id's partition of the repartition
    topic (the default partitioner is the same murmur2 as the results')."""
    if from_rekeyed:  # only if the topics' partition counts disagree: never loop
        home = home_partition(order_id, settings.partitions)
        raise RecordError(
            f"re-keyed order {order_id.decode(errors='replace')} arrived in partition "
            f"{ref.partition}, not {home}: {REKEYED_TOPIC} and the saga's other inputs "
            f"must have {settings.partitions} partitions",
            ref,
        )
    origin = f"{ref.topic}[{ref.partition}]@{ref.offset}".encode()
    await sender.send(REKEYED_TOPIC, order_id, ref.value, [(REKEYED_HEADER, origin)])
    metrics.sent(PLACED_REKEYED)
    log.debug("order %s re-keyed from %s", order_id.decode(errors="replace"), origin.decode())


@app.agent(stock_input)
async def inventory_owner(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    """Apply stock requests once each; see `pipelines.stages.stock`."""
    async for events in batches(stream, MAX_BATCH):
        started = time.perf_counter()
        batch = StockBatch(inventory, book)
        for event in events:
            await _stock_event(event, batch)
        outbox = ledger.outbox()
        batch.fill(outbox, topics)
        for partition in batch.partitions:
            pruning.prune(partition, book, outbox, inventory, now_ms())
        await outbox.send()
        _observe(batch.logical, started)
        yield None


async def _stock_event(event: faust.EventT[bytes], batch: StockBatch) -> None:
    logical = settings.logical_topic(event.message.topic)
    metrics.received(logical)
    batch.logical.append(logical)
    ref = record_ref(event)
    if schema_gate.blocked(ref.value):
        await schema_gate.ready(ref.value)
    make_current(event)
    v1 = logical == "inventory.reservations"
    try:
        record = serde.decode(ref.value or b"", REQUEST if v1 else REQUESTS, source=ref)
    except RecordError as exc:
        await dead_letters.write(ref, str(exc))
        return
    if v1:  # restocks: into the requests topic, so one topic orders all of a SKU's changes
        batch.forward(stock.as_group(record), settings.partitions)
        return
    failed = []
    for index, request in enumerate(record["requests"]):
        try:
            batch.decide(event, request, now_ms(), pruning, settings.partitions)
        except Exception as exc:
            log.exception(
                "poison entry %d of %s[%s]@%s", index, ref.topic, ref.partition, ref.offset
            )
            failed.append(f"entry {index}: {type(exc).__name__}: {exc}")
    if failed:
        await dead_letters.write(ref, "; ".join(failed))


@inventory.on_recover  # type: ignore[untyped-decorator]
async def rebuild_stock() -> None:
    """The per-SKU levels and the pruning queues again, from this worker's decisions."""
    topic = inventory.changelog_topic_name
    mine = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}
    entries = []
    for raw_key, value in inventory.data.items():
        key = raw_key.decode(errors="replace")
        if stock.partition_of(key, value, settings.partitions) in mine:
            entries.append((key, value))
    book.rebuild(entries)
    pruning.rebuild(entries, settings.partitions)
    log.debug("stock of %d SKUs rebuilt from %d decisions", len(book.levels), len(entries))
