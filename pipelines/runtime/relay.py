"""The delay relay: retries wait in the delay topics and go back to their channel when due.

A failed send is queued to `notifications.retry.<step>` with its `not_before`. The relay
reads those topics with a plain aiokafka consumer in its own group
(`sluice-notifications-retry`) and re-publishes each record, bytes and headers
unchanged, to its channel topic once it is due. A partition whose head is not due is
*paused* until it is, and the loop keeps polling (which keeps the group membership and
heartbeats alive) with a timeout that ends when the earliest head falls due: nothing
sleeps per message, and one early record never blocks another partition.

Why not a Faust agent: an agent cannot hold back one partition while its stream keeps
going (Faust acks in stream order, and pausing is Faust's own flow control, which it
resumes on every rebalance), and sleeping in an agent stalls every partition the actor
serves. With its own consumer, the relay pauses exactly the partitions it means to,
and commits an offset only after the re-published record is acknowledged.

Delivery is at least once: a crash or rebalance between publishing and committing
re-publishes a record, which the stage recognises as a duplicate attempt.

With a schema registry, a record whose writer schema is not known yet is looked up (in
a thread, by the schema gate) before it is held; while the registry does not answer,
its partition is sought back to it and the relay keeps polling, so the group membership
survives an outage of any length and nothing is dead-lettered for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import Gauge

from pipelines.errors import RecordError, RecordRef
from pipelines.runtime.deadletter import DeadLetters
from pipelines.runtime.faustapp import StageMetrics
from pipelines.runtime.schemagate import SchemaGate
from pipelines.serde import Serde
from pipelines.settings import Settings
from pipelines.stages import notify
from pipelines.stages.notify import DelayGate
from pipelines.topology import channel_topic, stage

log = logging.getLogger(__name__)

REQUESTED = "sluice.notifications.NotificationRequested"
(RELAY,) = stage("notifications").relays  # its group and the delay topics it reads
GROUP = RELAY.group


@dataclass(frozen=True)
class Held:
    """A fetched delay-topic record, decoded once: where it goes, or why it cannot."""

    record: Any  # aiokafka ConsumerRecord
    target: str | None  # catalog name of the channel topic, None when undecodable
    error: str | None = None


class DelayRelay:
    """Moves due records from the delay topics to their channel topics (see module doc)."""

    def __init__(
        self,
        settings: Settings,
        serde: Serde,
        metrics: StageMetrics,
        schemas: SchemaGate | None = None,
        *,
        max_wait_s: float = 1.0,
        max_hold_ms: int = notify.Policy().max_hold_ms,
    ) -> None:
        self.settings = settings
        self.serde = serde
        self.metrics = metrics
        self.schemas = schemas or SchemaGate(serde, [])
        self.max_wait_s = max_wait_s
        self.max_hold_ms = max_hold_ms
        self.sources = [settings.topic(t) for t in RELAY.inputs]
        self.gate: DelayGate[TopicPartition, Held] = DelayGate()
        self.paused: set[TopicPartition] = set()
        self.held_gauge = Gauge(
            "sluice_retry_held", "Delay-topic records held until due", registry=metrics.registry
        )
        self.paused_gauge = Gauge(
            "sluice_retry_paused_partitions",
            "Delay-topic partitions paused until their head is due",
            registry=metrics.registry,
        )

    async def run(self) -> None:
        """Relay until cancelled; if the clients fail, start afresh after a pause."""
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delay relay failed; restarting in 2 s")
                await asyncio.sleep(2.0)

    async def _session(self) -> None:
        conf = self.settings.aiokafka
        consumer = AIOKafkaConsumer(
            **conf(
                group_id=self.settings.group(GROUP),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=10_000,
                heartbeat_interval_ms=3_000,
            )
        )
        producer = AIOKafkaProducer(**conf(acks="all", enable_idempotence=True, linger_ms=5))
        consumer.subscribe(self.sources, listener=_Revocations(self))
        try:
            await producer.start()
            await consumer.start()
            while True:
                await self.cycle(consumer, producer)
        finally:
            self.gate = DelayGate()
            self.paused.clear()
            for client in (consumer, producer):
                try:
                    await client.stop()
                except KafkaError:
                    log.warning("delay relay: %s did not stop cleanly", type(client).__name__)

    async def cycle(self, consumer: Any, producer: Any) -> None:
        """Fetch (waiting at most until the next head is due), relay what is due, re-pause."""
        batch = await consumer.getmany(timeout_ms=self._wait_ms(), max_records=500)
        stalled = False
        for tp, records in batch.items():
            for record in records:
                if self.schemas.blocked(record.value) and not await self.schemas.try_ready(
                    record.value
                ):
                    consumer.seek(tp, record.offset)  # read again once the registry answers
                    stalled = True
                    break
                due, held = self._held(record)
                self.gate.hold(tp, due, held)
        released = self.gate.release(now_ms())
        if released:
            offsets = await self._forward(producer, released)
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                log.info("delay relay: commit after a rebalance failed (%s); will re-read", exc)
        self._sync_pauses(consumer)
        if stalled:  # the gate logs the outage (once per interval); poll on meanwhile
            await asyncio.sleep(self.schemas.first_delay_s)

    def _held(self, record: Any) -> tuple[int, Held]:
        """When `record` is due and where it goes; undecodable records are due at once.

        So is a task due further past its record's time than any retry the stage
        schedules (`max_hold_ms`): held, it would stop its partition, and every retry
        behind it, for as long as it says; the stage dead-letters it with the reason.
        """
        self.metrics.received(self.settings.logical_topic(record.topic))
        ref = RecordRef(record.topic, record.partition, record.offset, record.key, record.value)
        try:
            task = self.serde.decode(record.value or b"", REQUESTED, source=ref)
        except RecordError as exc:
            return 0, Held(record, None, str(exc))
        due = int(task["not_before"])
        if due - record.timestamp > self.max_hold_ms:
            due = 0
        return due, Held(record, channel_topic(task["channel"]))

    async def _forward(
        self, producer: Any, released: list[tuple[TopicPartition, Held]]
    ) -> dict[TopicPartition, int]:
        """Publish every released record, wait for all acks, return offsets to commit."""
        pending = []
        offsets: dict[TopicPartition, int] = {}
        for tp, held in released:
            record = held.record
            if held.target is None:
                ref = RecordRef(
                    record.topic, record.partition, record.offset, record.key, record.value
                )
                letters = self._dead_letters(producer)
                pending.append(await letters.write(ref, held.error or "undecodable"))
                self.metrics.sent("notifications.dlq")
            else:
                physical = self.settings.topic(held.target)
                headers = list(record.headers or ())
                pending.append(
                    await producer.send(physical, record.value, key=record.key, headers=headers)
                )
                self.metrics.sent(held.target)
            offsets[tp] = record.offset + 1
        await asyncio.gather(*pending)
        return offsets

    def _dead_letters(self, producer: Any) -> DeadLetters:
        """The stage's DLQ writer over this session's producer (whose futures we gather)."""

        async def send(
            topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
        ) -> Any:
            return await producer.send(topic, value, key=key, headers=headers)

        dlq = self.settings.topic("notifications.dlq")
        return DeadLetters("notifications", dlq, send, self.metrics.dead_letters)

    def _sync_pauses(self, consumer: Any) -> None:
        """Pause partitions whose head is not due; resume those that drained."""
        waiting = self.gate.waiting() & set(consumer.assignment())
        if waiting - self.paused:
            consumer.pause(*(waiting - self.paused))
        if self.paused - waiting:
            consumer.resume(*(self.paused - waiting))
        self.paused = waiting
        self.held_gauge.set(len(self.gate))
        self.paused_gauge.set(len(waiting))

    def _wait_ms(self) -> int:
        """Poll timeout: until the earliest held head is due, at most `max_wait_s`."""
        limit = int(self.max_wait_s * 1000)
        due = self.gate.next_due()
        if due is None:
            return limit
        return max(0, min(limit, due - now_ms()))


class _Revocations(ConsumerRebalanceListener):  # type: ignore[misc]
    """Drops held records of revoked partitions: their next owner reads them again."""

    def __init__(self, relay: DelayRelay) -> None:
        self.relay = relay

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        gone = set(revoked)
        self.relay.gate.drop(gone)
        self.relay.paused -= gone

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.relay.paused &= set(assigned)


def now_ms() -> int:
    return int(time.time() * 1000)
