"""Placing an order, without HTTP: idempotency, admission, publication, local status.

The order of the checks is the contract: a repeated Idempotency-Key is answered from
memory before anything else (even while backpressure refuses new work, since it
publishes nothing); then admission (429/queue); then one publication, awaited until the
broker acknowledges it. Just before producing, the key is recorded as *pending* with
the full record; once acknowledged, as done. A key therefore never leads to a second,
different order: a retry after a failure (or an interrupted attempt) republishes the
identical record, same order id, which the order stage deduplicates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from pipelines.serde import EncodeError
from producers.intake.gate import Gate
from producers.intake.idempotency import FINGERPRINT_HEADER, IdempotencyStore, KeyEntry
from producers.intake.metrics import IntakeMetrics
from producers.intake.publisher import Publisher, PublishFailed
from producers.intake.recovery import Placed
from producers.intake.status import StatusView
from producers.intake.validation import PLACED, OrderRequest, Rejection, text_problems

Encode = Callable[[str, Mapping[str, Any]], bytes]


class Accepted(NamedTuple):
    """The answer to a placed order: its id, and whether it came from an earlier request.

    A named tuple (immutable, and cheaper to build than a frozen dataclass).
    """

    order_id: str
    replayed: bool = False

    def body(self) -> dict[str, str]:
        return {"order_id": self.order_id, "status": "ACCEPTED"}

    def json(self) -> bytes:
        """`body()` as JSON, formatted directly: order ids are plain by ORDER_ID_PATTERN."""
        return b'{"order_id": "%s", "status": "ACCEPTED"}' % self.order_id.encode()


class Intake:
    """The intake's behaviour, given its parts (all injectable, for tests)."""

    def __init__(
        self,
        *,
        keys: IdempotencyStore,
        status: StatusView,
        gate: Gate,
        publisher: Publisher,
        encode: Encode,
        metrics: IntakeMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.status = status
        self.gate = gate
        self.publisher = publisher
        self.encode = encode
        self.metrics = metrics
        self.clock = clock
        self._claimed: set[str] = set()
        # order id -> the Idempotency-Key whose attempt with it failed (outcome unknown)
        self._held: dict[str, str] = {}

    async def place(self, order: OrderRequest, key: str | None) -> Accepted:
        """Accept `order` once; with a key, at most one order per key and content."""
        if key is None:
            return await self._attempt(order, None, retry=False)
        flight = self.keys.in_flight(key)
        if flight is not None:  # a concurrent duplicate: share the first one's outcome
            _same_content(flight.fingerprint, order.fingerprint)
            self.metrics.replays.inc()
            first: Accepted = await self.keys.join(flight)
            return first._replace(replayed=True)
        entry = self.keys.get(key)
        if entry is not None:
            _same_content(entry.fingerprint, order.fingerprint)
            if entry.pending is None:
                self.metrics.replays.inc()
                return Accepted(entry.order_id, replayed=True)
            order = order._replace(record=dict(entry.pending))
        retry = entry is not None
        return await self.keys.single_flight(
            key, order.fingerprint, lambda: self._attempt(order, key, retry=retry)
        )

    async def _attempt(self, order: OrderRequest, key: str | None, *, retry: bool) -> Accepted:
        if self.gate.paused:  # the gate's own check, without a coroutine per open request
            await self.gate.admit()
        order_id = order.order_id
        # a fresh random id is nobody else's; a client's own (or a retried one) is claimed
        claim = retry or "order_id" not in order.generated
        if claim:
            self._claim(order_id, key, retry=retry)
        try:
            value = self._encoded(order.record)
            headers: list[tuple[str, bytes]] = []
            if key is not None:
                headers.append((FINGERPRINT_HEADER, order.fingerprint.encode()))
                self.keys.remember(
                    key, KeyEntry(order_id, order.fingerprint, self.clock(), order.record)
                )
            await self._publish(order_id, value, headers, key)
            now = self.clock()
            if key is not None:
                self.keys.remember(key, KeyEntry(order_id, order.fingerprint, now))
                self._held.pop(order_id, None)
            self.status.accepted(order_id, int(now * 1000))
        finally:
            if claim:
                self._claimed.discard(order_id)
        return Accepted(order_id)

    async def _publish(
        self, order_id: str, value: bytes, headers: list[tuple[str, bytes]], key: str | None
    ) -> None:
        try:
            await self.publisher.publish(order_id.encode(), value, headers)
        except PublishFailed as exc:
            self.metrics.publish_failures.inc()
            if key is not None:
                self._hold(order_id, key)
            advice = " with the same Idempotency-Key (it keeps the order id)" if key else ""
            raise Rejection(
                503,
                f"the order was not accepted: {exc}; retry later{advice}",
                headers={"Retry-After": "5"},
            ) from None
        self.metrics.published()

    def recover(self, placed: Iterable[Placed]) -> int:
        """Learn recent orders again: ACCEPTED status for each, and their keys.

        Run before the intake listens (nothing else touches the stores then), so a
        restarted intake still knows its recent keys and answers GET for recent orders
        before the order stage has reported them. Returns the number of keys learnt.
        """
        learnt = 0
        for order in placed:
            self.status.accepted(order.order_id, order.timestamp_ms)
            if order.key is not None and order.fingerprint is not None:
                entry = KeyEntry(order.order_id, order.fingerprint, order.timestamp_ms / 1000)
                learnt += self.keys.learn(order.key, entry)
        return learnt

    def _claim(self, order_id: str, key: str | None, *, retry: bool) -> None:
        """Hold `order_id` for this attempt; one known here or held by another is a 409.

        The claim covers the whole attempt, publication included, and is released when
        it ends: concurrent requests with one client-chosen id get one 202 and 409s,
        and an unkeyed attempt that failed (503) leaves the id free for the client's
        retry. A keyed attempt that failed is different: its record may have been
        appended after all (a timeout hides that), so its id stays held for that key's
        retry while the key is pending; anyone else would get a 202 for an order the
        stage then drops as a duplicate. A retry of a pending key republishes its own
        id, so only a claim by another request stops it, not the status its earlier
        attempt may have left.
        """
        if order_id in self._claimed:
            raise Rejection(
                409,
                f"order {order_id} is being placed by another request; "
                "use a new order_id or an Idempotency-Key",
            )
        if self._held_by_other(order_id, key):
            raise Rejection(
                409,
                f"order {order_id} belongs to an earlier request whose Idempotency-Key "
                "is still pending (its delivery may have succeeded); use a new order_id",
            )
        if not retry and self.status.get(order_id) is not None:
            raise Rejection(
                409, f"order {order_id} already exists; use a new order_id or an Idempotency-Key"
            )
        self._claimed.add(order_id)

    def _hold(self, order_id: str, key: str) -> None:
        """Keep `order_id` for `key`'s retry; forget holds whose key is no longer pending."""
        self._held[order_id] = key
        if len(self._held) > self.keys.max_keys:
            for held_id, held_key in list(self._held.items()):
                if not self._pending(held_key):
                    del self._held[held_id]

    def _held_by_other(self, order_id: str, key: str | None) -> bool:
        holder = self._held.get(order_id)
        if holder is None or holder == key:
            return False
        if self._pending(holder):
            return True
        del self._held[order_id]  # the key was forgotten or completed: the hold is stale
        return False

    def _pending(self, key: str) -> bool:
        entry = self.keys.get(key)
        return entry is not None and entry.pending is not None

    def _encoded(self, record: Mapping[str, Any]) -> bytes:
        try:
            return self.encode(PLACED, record)
        except EncodeError as exc:  # e.g. text the schema's string type cannot carry
            raise Rejection(422, "invalid order", text_problems(record) or [str(exc)]) from None


def _same_content(known: str | None, fingerprint: str) -> None:
    if known is not None and known != fingerprint:
        raise Rejection(
            409,
            "this Idempotency-Key was already used with a different order; "
            "use a new key for a new order",
        )
