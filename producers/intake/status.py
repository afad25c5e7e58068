"""Order status for `GET /orders/{id}`: what the order stage reported, else what we accepted.

The source of truth is the compacted topic `orders.status`, which the order stage writes
(ACCEPTED when it takes an order, then CONFIRMED or REJECTED with a reason; the newest
record per order id wins). A background thread tails it into a bounded map. An order
this intake has just accepted is ACCEPTED here at once, before the stage has seen it, so
a client that follows `Location:` straight away never gets a 404 for its own order.

The view is eventually consistent: a status appears here after the stage has written it
and this intake has read it (normally well under a second), and a terminal status never
goes back to ACCEPTED. It keeps the newest `status_max_orders` orders; older ones answer
404 here although the topic still has them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from consumers.tail import watermarks
from pipelines.errors import RecordError
from pipelines.serde import serde_for
from pipelines.settings import Settings
from producers.intake.fifo import FifoMap
from producers.intake.recovery import reached

log = logging.getLogger(__name__)

STATUS = "sluice.orders.OrderStatus"
TERMINAL = frozenset({"CONFIRMED", "REJECTED"})


class OrderState(NamedTuple):
    """One order's latest known status and who said so ("stage" or "intake").

    A named tuple (immutable, and cheaper to build than a frozen dataclass): one is made
    for every accepted order.
    """

    order_id: str
    status: str
    reason: str | None
    updated_at: int
    source: str

    def body(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "status": self.status,
            "reason": self.reason,
            "updated_at": self.updated_at,
            "source": self.source,
        }


class StatusView:
    """The newest status per order id, bounded (the orders first seen longest ago go first).

    Held so that a large view never stalls the event loop: no insert copies the whole
    table (`FifoMap`), and no entry is an object the cyclic garbage collector tracks (an
    order the intake accepted is held as its timestamp, a stage's status as one string;
    `_pack`). With a tuple per order, young collections of a serving intake were half
    status entries and took 12 to 25 ms each.
    """

    def __init__(self, max_orders: int) -> None:
        self.max_orders = max_orders
        self._orders: FifoMap[Packed] = FifoMap()

    def __len__(self) -> int:
        return len(self._orders)

    def get(self, order_id: str) -> OrderState | None:
        packed = self._orders.get(order_id)
        return None if packed is None else _unpack(order_id, packed)

    def accepted(self, order_id: str, at_ms: int) -> None:
        """This intake accepted `order_id`: ACCEPTED until the stage says more."""
        if order_id not in self._orders:
            self._put(order_id, int(at_ms))

    def apply(self, order_id: str, record: Mapping[str, Any] | None) -> None:
        """One record of `orders.status`; a tombstone (None) forgets the order."""
        if record is None:
            self._orders.pop(order_id)
            return
        current = self._orders.get(order_id)
        status = str(record["status"])
        if current is not None and _status(current) in TERMINAL and status not in TERMINAL:
            return  # a re-sent ACCEPTED never undoes the end of an order
        reason = record.get("reason")
        state = OrderState(
            order_id,
            status,
            None if reason is None else str(reason),
            int(record["updated_at"]),
            "stage",
        )
        self._put(order_id, _pack(state))

    def apply_many(self, updates: Iterable[tuple[str, Mapping[str, Any] | None]]) -> None:
        for order_id, record in updates:
            self.apply(order_id, record)

    def _put(self, order_id: str, packed: Packed) -> None:
        self._orders.put(order_id, packed)
        while self._orders.slots > self.max_orders:
            self._orders.popleft()


#: A stored status: epoch ms of an order this intake accepted, a stage's status packed
#: as "updated_at NUL status [NUL reason]", or (text with a NUL in it) the OrderState.
Packed = int | str | OrderState


def _pack(state: OrderState) -> Packed:
    if "\x00" in state.status or (state.reason is not None and "\x00" in state.reason):
        return state
    if state.reason is None:
        return f"{state.updated_at}\x00{state.status}"
    return f"{state.updated_at}\x00{state.status}\x00{state.reason}"


def _unpack(order_id: str, packed: Packed) -> OrderState:
    if isinstance(packed, int):
        return OrderState(order_id, "ACCEPTED", None, packed, "intake")
    if isinstance(packed, OrderState):
        return packed
    at, status, *reason = packed.split("\x00", 2)
    return OrderState(order_id, status, reason[0] if reason else None, int(at), "stage")


def _status(packed: Packed) -> str:
    if isinstance(packed, int):
        return "ACCEPTED"
    if isinstance(packed, OrderState):
        return packed.status
    return packed.split("\x00", 2)[1]


class StatusFeed:
    """A thread tailing `orders.status` from its beginning into a StatusView.

    librdkafka does the network work in its own threads and this thread only decodes;
    updates are handed to the event loop (`call_soon_threadsafe`), so the view is only
    ever touched by the loop and needs no lock.
    """

    def __init__(
        self, settings: Settings, view: StatusView, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.settings = settings
        self.view = view
        self.loop = loop
        self.topic = settings.topic("orders.status")
        self.caught_up = False
        self.records = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="intake-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tail()
            except KafkaException as exc:
                log.warning("status feed: %s; retrying", exc.args[0])
                self._stop.wait(1.0)

    def _tail(self) -> None:
        consumer = Consumer(
            self.settings.confluent(
                **{
                    "group.id": f"sluice-intake-status-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                }
            )
        )
        try:
            ends = self._assign(consumer)
            serde = serde_for(self.settings)
            while not self._stop.is_set():
                batch = consumer.consume(500, timeout=0.2)
                decoded = [_update(msg, serde) for msg in batch if msg.error() is None]
                updates = [u for u in decoded if u is not None]
                if updates and not self._hand_over(updates):
                    return
                self.records += len(updates)
                if not self.caught_up and not batch:
                    self.caught_up = reached(consumer, ends)
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> dict[int, int]:
        """Assign every partition from the beginning; returns the end offsets to reach."""
        timeout = self.settings.request_timeout_s
        metadata = consumer.list_topics(self.topic, timeout=timeout)
        count = len(metadata.topics[self.topic].partitions)
        marks = watermarks(consumer, self.topic, count, timeout)
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(count)])
        ends = {p: high for p, (low, high) in marks.items() if high > low}
        self.caught_up = not ends
        return ends

    def _hand_over(self, updates: list[tuple[str, Mapping[str, Any] | None]]) -> bool:
        try:
            self.loop.call_soon_threadsafe(self.view.apply_many, updates)
        except RuntimeError:  # the loop has closed: the intake is shutting down
            return False
        return True


def _update(msg: Any, serde: Any) -> tuple[str, Mapping[str, Any] | None] | None:
    """(order id, status record or None for a tombstone); None for an undecodable record."""
    key = (msg.key() or b"").decode(errors="replace")
    value = msg.value()
    if value is None:
        return key, None
    try:
        record: Mapping[str, Any] = serde.decode(value, STATUS)
    except RecordError as exc:
        log.warning("skipping an undecodable status record for %s: %s", key, exc)
        return None
    return str(record.get("order_id") or key), record
