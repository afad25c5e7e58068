"""The order stage: `faust -A pipelines.orders:app worker` (or `sluice worker orders`).

Two agents, one consumer group (`sluice-orders`):

* `saga` reads orders.placed and inventory.results (both keyed by order id, so one
  worker owns all of an order's events), keeps each order's saga state in the `orders`
  table and publishes the outcome;
* `inventory` reads inventory.reservations (keyed by SKU, so one worker owns a SKU's
  stock) and keeps stock and per-request decisions in the `inventory` table.

Processing is at-least-once (Faust's exactly_once mode is not used: in faust-streaming
it binds transactions to output partitions, which breaks for repartitioning topologies
like this one). Exactly-once *outcomes* come from the tables instead: `confirmed`,
`rejected` and `status` are tables whose changelog topics are orders.confirmed,
orders.rejected and orders.status themselves, so writing the outcome and remembering
that the order has ended are a single record. After a crash the tables are restored
from those topics, and a replayed event finds its order already ended.

A placement that is not in its order id's partition under its order id as key (a
keyless record from Kafka Connect or a console producer, another key, another
partitioner) is re-keyed through the app's own repartition topic (`PLACED_REKEYED`,
co-partitioned with inventory.results) before the saga touches any stock; see
`pipelines.stages.homing`. Re-producing it onto orders.placed instead would count it
twice in analytics and in the intake's recovery, which read that topic too.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import faust

from pipelines.backpressure import EDGES
from pipelines.catalog import PLACED_REKEYED
from pipelines.catalog import get as catalog_topic
from pipelines.errors import RecordError, RecordRef
from pipelines.rules import CHANNELS
from pipelines.serde import serde_for
from pipelines.stages import controller as backpressure_controller
from pipelines.stages import saga, stock
from pipelines.stages.deadletter import DeadLetters, redriven_for_another
from pipelines.stages.faustapp import (
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
from pipelines.stages.homing import REKEYED_HEADER, at_home, home_partition
from pipelines.stages.schemagate import SchemaGate
from pipelines.stages.startup import stage_settings

log = logging.getLogger(__name__)

PLACED = "sluice.orders.OrderPlaced"
RESULT = "sluice.inventory.ReservationResult"
REQUEST = "sluice.inventory.ReservationRequested"

settings = stage_settings()  # bad settings: one line, no traceback
serde = serde_for(settings, client_retries=0)  # the schema gate retries, off the event loop
config = saga.SagaConfig(decline_rate=settings.orders.decline_rate)
metrics = StageMetrics("orders")
app = make_app("orders", settings)


def _topic(name: str, **kw: Any) -> faust.TopicT:
    return app.topic(settings.topic(name), partitions=settings.partitions, **RAW, **kw)


saga_input = app.topic(
    settings.topic("orders.placed"),
    settings.topic("inventory.results"),
    settings.topic(PLACED_REKEYED),
    **RAW,
)
reservations = _topic("inventory.reservations")
sender = DirectSender(app)
dead_letters = DeadLetters(
    "orders", settings.topic("orders.dlq"), sender.send, metrics.dead_letters
)
NOTIFICATION_TOPICS = {ch: f"notifications.{ch.lower()}" for ch in CHANNELS}
OUTPUTS = (
    "inventory.reservations",
    "inventory.results",
    *NOTIFICATION_TOPICS.values(),
    "orders.status",
    "orders.confirmed",
    "orders.rejected",
)
schema_gate = SchemaGate(
    serde, [(str(catalog_topic(t).value_schema), settings.topic(t)) for t in OUTPUTS]
)
REKEYED_TOPIC = settings.topic(PLACED_REKEYED)

orders = table(app, "orders", JSON_STATE)
inventory = table(app, "inventory", JSON_STATE)
outcomes = {
    kind: table(app, kind, RAW_SCHEMA, _topic(f"orders.{kind}"))
    for kind in ("confirmed", "rejected")
}
status = table(app, "status", RAW_SCHEMA, _topic("orders.status"))
install_web(app, metrics, {"orders": orders, "inventory": inventory, **outcomes})
controller = backpressure_controller.install(
    app, settings, EDGES["orders"], ["orders.placed"], metrics
)


@app.agent(saga_input)
async def order_saga(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    """Validate, reserve, pay and end each order; see `pipelines.stages.saga`."""
    async for event in stream.events():
        started = time.perf_counter()
        message = event.message
        logical = settings.logical_topic(message.topic)
        metrics.received(logical)
        if logical == "orders.placed":
            controller.taken(message.topic, message.partition, message.offset)
        if redriven_for_another(event.headers, "orders.dlq"):
            yield None  # analytics' dead letter, redriven to orders.placed: not ours
            continue
        if schema_gate.blocked(message.value):
            await schema_gate.ready(message.value)  # a registry outage waits, never DLQs
        effects = await _saga_step(event, logical)
        if effects is not None:
            _track_inflight(event.message.partition, event.key or b"", effects)
            await _publish(event.key, effects)
        metrics.latency.labels("orders", logical).observe(time.perf_counter() - started)
        yield None


def _track_inflight(partition: int, key: bytes, effects: saga.Effects) -> None:
    """Tell the controller when an order starts (placed and valid) and when it ends."""
    if effects.state is None:
        return
    controller.track(partition, key, open_="decided" not in effects.state)


async def _saga_step(event: faust.EventT[bytes], logical: str) -> saga.Effects | None:
    """Decode and run the saga for one record; poison goes to the DLQ and returns None.

    A placement away from its order id's partition (or key) is re-keyed and returns None:
    the saga sees it when it comes back through the repartition topic.
    """
    ref = record_ref(event)
    key = ref.key or b""
    try:
        is_placed = logical != "inventory.results"
        record = serde.decode(ref.value or b"", PLACED if is_placed else RESULT, source=ref)
        if is_placed:
            order_id = record["order_id"].encode()
            if not at_home(ref.key, ref.partition, order_id, settings.partitions):
                await _rekey(ref, order_id, from_rekeyed=logical == PLACED_REKEYED)
                return None
        step = saga.on_placed if is_placed else saga.on_result
        effects = step(
            orders.get(key),
            record,
            terminal=_ended(key),
            source=(logical, ref.partition, ref.offset),
            now_ms=now_ms(),
            config=config,
        )
    except RecordError as exc:
        await dead_letters.write(ref, str(exc))
        return None
    except Exception as exc:  # a bug on one record must not stop the partition
        log.exception("poison record %s[%s]@%s", ref.topic, ref.partition, ref.offset)
        await dead_letters.write(ref, f"{type(exc).__name__}: {exc}")
        return None
    if effects.note:
        log.debug("order %s: %s", key.decode(errors="replace"), effects.note)
    return effects


async def _rekey(ref: RecordRef, order_id: bytes, *, from_rekeyed: bool) -> None:
    """Send a stray placement, unchanged, to its order id's partition of the repartition
    topic (the default partitioner is the same murmur2 as inventory.results')."""
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


def _ended(key: bytes) -> bool:
    return any(key in table for table in outcomes.values())


async def _publish(key: bytes | None, effects: saga.Effects) -> None:
    """Emit side effects, then the state and the outcome (a table write: changelog = topic)."""
    key = key or b""
    for request in effects.reservations:
        await _send("inventory.reservations", request["sku"], REQUEST, request)
    for note in effects.notifications:
        await _send(
            NOTIFICATION_TOPICS[note["channel"]],
            note["notification_id"],
            "sluice.notifications.NotificationRequested",
            note,
        )
    if effects.state is not None:
        orders[key] = effects.state
    if effects.status is not None:
        status[key] = serde.encode(
            "sluice.orders.OrderStatus", effects.status, topic=settings.topic("orders.status")
        )
    if effects.outcome is not None:
        kind, record = effects.outcome
        schema = (
            "sluice.orders.OrderConfirmed" if kind == "confirmed" else "sluice.orders.OrderRejected"
        )
        outcomes[kind][key] = serde.encode(schema, record, topic=settings.topic(f"orders.{kind}"))
        metrics.sent(f"orders.{kind}")


async def _send(logical: str, key: str, schema: str, record: dict[str, Any]) -> None:
    physical = settings.topic(logical)
    await sender.send(physical, key.encode(), serde.encode(schema, record, topic=physical))
    metrics.sent(logical)


_pending_prune: dict[int, collections.deque[tuple[int, bytes]]] = collections.defaultdict(
    collections.deque
)


@app.agent(reservations)
async def inventory_owner(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    """Apply stock requests once each; see `pipelines.stages.stock`."""
    async for event in stream.events():
        started = time.perf_counter()
        metrics.received("inventory.reservations")
        ref = record_ref(event)
        if schema_gate.blocked(ref.value):
            await schema_gate.ready(ref.value)
        try:
            request = serde.decode(ref.value or b"", REQUEST, source=ref)
        except RecordError as exc:
            await dead_letters.write(ref, str(exc))
            yield None
            continue
        step = stock.handle(
            request,
            inventory.get(stock.stock_key(request["sku"]).encode()),
            inventory.get(stock.request_key(request).encode()),
            offset=ref.offset,
            now_ms=now_ms(),
        )
        for table_key, value in step.writes:
            inventory[table_key.encode()] = value
            if table_key.startswith("req:") and request["action"] != "RESTOCK":
                _pending_prune[ref.partition].append((now_ms(), table_key.encode()))
        _prune(ref.partition)
        if step.result is not None:
            await _send("inventory.results", step.result["order_id"], RESULT, step.result)
        metrics.latency.labels("orders", "inventory.reservations").observe(
            time.perf_counter() - started
        )
        yield None


def _prune(partition: int, budget: int = 16) -> None:
    """Forget a few old stock decisions of this partition (they only guard against replays)."""
    queue = _pending_prune[partition]
    horizon = now_ms() - settings.orders.request_retention_s * 1000
    while queue and budget and queue[0][0] < horizon:
        _at, key = queue.popleft()
        inventory.pop(key, None)
        budget -= 1
