"""The notifications stage: `faust -A pipelines.notifications:app worker` (or `sluice worker
notifications`).

One agent per channel topic (notifications.email, .sms, .push), each with
`settings.notifications.concurrency` actors, so a slow provider keeps several sends in
flight instead of serialising a partition. The price is ordering: records of one
partition may finish out of order. Notifications of different ids are independent, and
all copies of one id share a partition (keyed by id), which one worker owns; a per-id
claim in the worker keeps two actors off the same id.

Exactly one result per id: `results` is a table whose changelog *is*
notifications.results, so publishing the result and remembering it are one record.
At most one delivery per id: before each send the attempt is recorded in the `attempts`
table and acknowledged by Kafka (`durable_set`); see `pipelines.stages.notify` for what a
redelivered task does with it. Failed sends go to the delay topics and come back through
the delay relay (`pipelines.runtime.relay`), which runs as a task in every worker.

Rate limits hold for the whole group: each worker's token bucket per channel runs at the
group rate times the share of that channel's partitions it owns, re-divided on every
rebalance.

`create_app(settings)` builds one app with everything it owns (`NotificationsStage`); the
module's `app` is the one built from the environment's settings, for `faust -A`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import faust
from prometheus_client import Counter, Gauge, Histogram

from pipelines.catalog import get as catalog_topic
from pipelines.delivery import (
    DeliveryError,
    DeliverySettings,
    Sender,
    TokenBucket,
    senders_for,
    worker_share,
)
from pipelines.errors import RecordError, RecordRef
from pipelines.rules import CHANNELS
from pipelines.runtime.batches import Ledger, dumps
from pipelines.runtime.faustapp import JSON_STATE, RAW_SCHEMA, StageMetrics, now_ms, record_ref
from pipelines.runtime.kit import build_kit
from pipelines.runtime.relay import DelayRelay
from pipelines.runtime.schemagate import SchemaGate
from pipelines.runtime.startup import stage_settings
from pipelines.settings import Settings
from pipelines.stages import notify
from pipelines.stages.homing import REKEYED_HEADER, at_home, home_partition
from pipelines.topology import CHANNEL_TOPICS, DELAY_TOPICS

log = logging.getLogger(__name__)

REQUESTED = "sluice.notifications.NotificationRequested"
RESULT = "sluice.notifications.NotificationResult"
#: What the stage writes, by schema: retries, dead letters (the last task) and results.
OUTPUTS = (
    *((REQUESTED, topic) for topic in DELAY_TOPICS),
    (REQUESTED, "notifications.dlq"),
    (RESULT, "notifications.results"),
)


class DeliveryMetrics:
    """Per-channel delivery counters and send latency, in the stage's registry."""

    def __init__(self, stage: StageMetrics) -> None:
        reg = stage.registry
        self.sent = Counter(
            "sluice_notifications_sent", "Accepted by the provider", ["channel"], registry=reg
        )
        self.failed = Counter(
            "sluice_notifications_failed", "Failed sends", ["channel", "reason"], registry=reg
        )
        self.retried = Counter(
            "sluice_notifications_retried", "Queued to a delay topic", ["channel"], registry=reg
        )
        self.dead = Counter(
            "sluice_notifications_dead_lettered", "Dead-lettered", ["channel"], registry=reg
        )
        self.latency = Histogram(
            "sluice_notification_send_seconds",
            "One provider send",
            ["channel"],
            registry=reg,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.rate = Gauge(
            "sluice_notification_rate_limit", "This worker's share", ["channel"], registry=reg
        )


class SenderPool:
    """The worker's senders, made once on first use and closed when the worker stops.

    HTTP senders multiplex over one aiohttp session per channel. An SMTP session sends one
    mail at a time, so email gets one session per concurrent actor, leased per send.
    """

    def __init__(
        self,
        delivery: DeliverySettings,
        smtp_sessions: int,
        make: Callable[[DeliverySettings], Mapping[str, Sender]] = senders_for,
    ) -> None:
        self._delivery = delivery
        self._sessions = smtp_sessions
        self._make = make  # one sender per channel (a test's fakes, else the providers')
        self._http: dict[str, Sender] = {}
        self._smtp: asyncio.Queue[Sender] | None = None
        self._made: list[Sender] = []

    def _smtp_queue(self) -> asyncio.Queue[Sender]:
        if self._smtp is None:
            queue: asyncio.Queue[Sender] = asyncio.Queue()
            for index in range(self._sessions):
                made = self._make(self._delivery)
                queue.put_nowait(made["EMAIL"])
                self._made.append(made["EMAIL"])
                if index == 0:
                    self._http = {ch: made[ch] for ch in ("SMS", "PUSH")}
                    self._made.extend(self._http.values())
            self._smtp = queue
        return self._smtp

    @contextlib.asynccontextmanager
    async def lease(self, channel: str) -> AsyncIterator[Sender]:
        """A sender for `channel`, exclusively for email, shared for HTTP."""
        queue = self._smtp_queue()
        if channel != "EMAIL":
            yield self._http[channel]
            return
        sender = await queue.get()
        try:
            yield sender
        finally:
            queue.put_nowait(sender)

    async def close(self) -> None:
        for sender in self._made:
            try:
                await sender.close()
            except Exception:  # closing is best effort: the worker is stopping anyway
                log.warning("closing the %s sender failed", sender.channel, exc_info=True)


class NotificationsStage:
    """One notifications app and all it owns: its topics, tables, senders, rate limits,
    the ids in progress and the delay relay.

    Nothing here is shared with another app: two stages built from two settings (another
    topic prefix, another data directory) run side by side in one process. `senders` is
    how the stage reaches the providers: made from `settings.delivery` unless given (a
    test's pool of fakes).
    """

    def __init__(self, settings: Settings, senders: SenderPool | None = None) -> None:
        self.kit = kit = build_kit("notifications", settings)
        self.settings, self.app = settings, kit.app
        self.serde, self.metrics, self.dead_letters = kit.serde, kit.metrics, kit.dead_letters
        config = settings.notifications
        self.policy = notify.Policy(
            max_attempts=config.max_attempts,
            delays_s=config.retry_delays_s,
            jitter=config.jitter,
            # Not a settings field yet: picked up once NotificationSettings gains it.
            provider_idempotent=config.provider_idempotent,
        )
        self.delivery_metrics = DeliveryMetrics(self.metrics)
        # Every send waits for its attempt record to be acknowledged, and each result for
        # its own, so producer linger sits twice on the path of each send: none at all.
        # Records of concurrent actors still share a request while one is in flight
        # (bench.notifications, provider at 0 ms: 57 -> 210 sends/s at concurrency 1,
        # 419 -> 650 at concurrency 8).
        self.app.conf.producer_linger = 0.0
        self.ledger = Ledger(self.app)
        self.dlq = settings.topic("notifications.dlq")
        self.schema_gate = kit.schema_gate(OUTPUTS)
        self.senders = senders or SenderPool(settings.delivery, config.concurrency)
        self.limits = {channel: TokenBucket(0.0) for channel in CHANNELS}
        self.attempts = kit.table("attempts", JSON_STATE)
        self.results = kit.table("results", RAW_SCHEMA, "notifications.results")
        self.relay = DelayRelay(
            settings,
            self.serde,
            self.metrics,
            SchemaGate(self.serde, []),
            max_hold_ms=self.policy.max_hold_ms,
        )
        self.busy: set[bytes] = set()  # ids an actor of this worker is processing right now

    def install(self) -> faust.App:
        """Add the web views, one agent per channel, the rebalance and shutdown hooks and
        the delay relay to the app (once); returns the app."""
        app = self.app
        self.kit.install_web({"attempts": self.attempts, "results": self.results})
        for channel in CHANNELS:
            self._channel_agent(channel)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_before_shutdown.connect(self._close_senders)
        app.task(self.delay_relay)
        return app

    def _channel_agent(self, channel: str) -> None:
        """Register the agent that delivers one channel's topic."""

        async def deliver(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                await self.handle(channel, event)

        # Named as they were when they were module functions: logs and /health name them.
        deliver.__name__ = deliver.__qualname__ = f"deliver_{channel.lower()}"
        self.app.agent(
            self.kit.topic(CHANNEL_TOPICS[channel]),
            name=f"notifications.deliver_{channel.lower()}",
            concurrency=self.settings.notifications.concurrency,
        )(deliver)

    async def handle(self, channel: str, event: faust.EventT[bytes]) -> None:
        """Decode, decide, and carry out one task record; nothing stops the partition."""
        started = time.perf_counter()
        metrics = self.metrics
        logical = self.settings.logical_topic(event.message.topic)
        metrics.received(logical)
        ref = record_ref(event)
        if self.schema_gate.blocked(ref.value):
            await self.schema_gate.ready(ref.value)  # a registry outage waits, never DLQs
        try:
            await self._process(channel, event, ref, logical)
        except RecordError as exc:
            await self.dead_letters.write(ref, str(exc))
        except Exception as exc:  # a bug on one record must not stop the partition
            log.exception("poison record %s[%s]@%s", ref.topic, ref.partition, ref.offset)
            metrics.errors.labels("notifications", type(exc).__name__).inc()
            await self.dead_letters.write(ref, f"{type(exc).__name__}: {exc}")
        metrics.latency.labels("notifications", logical).observe(time.perf_counter() - started)

    async def _process(
        self, channel: str, event: faust.EventT[bytes], ref: RecordRef, logical: str
    ) -> None:
        task = self.serde.decode(ref.value or b"", REQUESTED, source=ref)
        key = task["notification_id"].encode()
        if not at_home(event.key, ref.partition, key, self.settings.partitions):
            await self._rehome(channel, key, ref, event)
            return
        raw_token = (event.headers or {}).get(notify.REDRIVE_HEADER)
        stored = self.results.get(key)
        if self.schema_gate.blocked(stored):  # written by another worker, maybe under another id
            await self.schema_gate.ready(stored)
        step = notify.on_task(
            task,
            state=self.attempts.get(key),
            result=self._result_status(key),
            token=raw_token.decode() if raw_token else None,
            source=(logical, ref.partition, ref.offset),
            busy=key in self.busy,
            now_ms=now_ms(),
            policy=self.policy,
        )
        if step.kind == "skip":
            log.debug("notification %s: %s", task["notification_id"], step.note)
            return
        self.busy.add(key)  # claimed before the first await: no other actor decides on it
        try:
            if step.kind == "send":
                step = await self._send(channel, key, task, step)
            await self._apply(channel, key, ref, event, step)
        except Exception as exc:
            if step.state is None or self._result_status(key) is not None:
                raise
            # The attempt is recorded; end the id as dead (redrivable) rather than leave it open.
            log.exception("notification %s failed in the stage", task["notification_id"])
            error = f"stage error: {type(exc).__name__}: {exc}"
            await self._dead_letter_task(
                channel, key, ref, notify.abandoned(task, step.state, error, now_ms())
            )
        finally:
            self.busy.discard(key)

    async def _rehome(
        self, channel: str, key: bytes, ref: RecordRef, event: faust.EventT[bytes]
    ) -> None:
        """Send a task that is not under its notification id in that id's partition (keyless,
        keyed otherwise, or another partitioner) back to its channel topic, keyed by its id.

        The attempt and result tables are kept per id in the id's partition: decided where
        it stray-landed, a task would collapse onto its record key's state or escape the
        once-only check of a copy that lands at home. Only this stage reads the channel
        topics, so the copy is counted nowhere twice; the stray is acknowledged once the copy
        is sent (flushed before the commit, like every output).
        """
        partitions = self.settings.partitions
        if REKEYED_HEADER in (event.headers or {}):  # never loop on a partition-count mismatch
            raise RecordError(
                f"task {key.decode(errors='replace')} was re-keyed and still arrived in "
                f"partition {ref.partition}, not {home_partition(key, partitions)}: "
                f"{ref.topic} must have {partitions} partitions",
                ref,
            )
        origin = f"{ref.topic}[{ref.partition}]@{ref.offset}".encode()
        headers = [*_carried_headers(event), (REKEYED_HEADER, origin)]
        await self._publish(CHANNEL_TOPICS[channel], key, ref.value or b"", headers)

    def _result_status(self, key: bytes) -> str | None:
        stored = self.results.get(key)
        return None if stored is None else str(self.serde.decode(stored, RESULT)["status"])

    async def _send(
        self, channel: str, key: bytes, task: dict[str, Any], step: notify.Step
    ) -> notify.Step:
        """Record the attempt durably, then hand the task to the provider once."""
        state = step.state
        assert state is not None  # a send step always carries the attempt to record
        if step.clear_result:
            self.results.pop(key, None)  # a redrive retracts the dead-letter result
        await self.limits[channel].acquire()
        await self.durable_set(self.attempts, key, state, dumps(state))
        measured = self.delivery_metrics
        started = time.perf_counter()
        try:
            async with self.senders.lease(channel) as provider:
                provider_id = await provider.send(task)
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # a sender bug: whether the provider got it is unknown
            log.exception("sender for %s failed unexpectedly", channel)
            error = DeliveryError("sender error", f"{type(exc).__name__}: {exc}")
        else:
            measured.latency.labels(channel).observe(time.perf_counter() - started)
            measured.sent.labels(channel).inc()
            return notify.on_sent(task, state, provider_id, now_ms())
        measured.latency.labels(channel).observe(time.perf_counter() - started)
        measured.failed.labels(channel, error.reason[:40]).inc()
        return notify.on_failed(task, state, error, now_ms=now_ms(), policy=self.policy)

    async def durable_set(self, tbl: Any, key: bytes, value: Any, encoded: bytes) -> None:
        """Store `value` under `key`, returning once Kafka acknowledged the changelog record.

        `tbl[key] = value` only queues the changelog record in Faust's producer buffer and
        hands back nothing to wait on. Here the table's store is written directly and the
        record (`encoded`, as the table's codec reads it back) goes to the app's producer
        in the current event's partition (`Ledger.write`, keeping Faust's persisted-offset
        bookkeeping), and this returns when the broker acknowledged it (acks=all).
        Whichever worker owns the partition next restores the value: that is what lets a
        redelivered task know an attempt was already handed to the provider.
        """
        await (await self.ledger.write(tbl, tbl.partition_for_key(key), key, value, encoded))

    async def forget(self, tbl: Any, key: bytes) -> None:
        """`tbl.pop(key, None)`: the tombstone goes to the app's producer (Faust's commit
        flushes it before committing, as for Faust's own deletes), not awaited."""
        if tbl.data.get(key) is not None:
            await self.ledger.write(tbl, tbl.partition_for_key(key), key, None, None)

    async def _apply(
        self,
        channel: str,
        key: bytes,
        ref: RecordRef,
        event: faust.EventT[bytes],
        step: notify.Step,
    ) -> None:
        """Carry out a decided step: result, retry, deferral or dead letter."""
        carried = _carried_headers(event)
        if step.kind == "deliver":
            encoded = self._encoded_result(step)
            await self.durable_set(self.results, key, encoded, encoded)
            # only after the result is safe: it is the dedupe record now
            await self.forget(self.attempts, key)
            self.metrics.sent("notifications.results")
        elif step.kind == "defer":
            await self._publish(step.delay_topic or "", key, ref.value or b"", carried)
        elif step.kind == "retry":
            if step.state is not None:
                self.attempts[key] = step.state
            assert step.task is not None
            delay_topic = self.settings.topic(step.delay_topic or "")
            value = self.serde.encode(REQUESTED, step.task, topic=delay_topic)
            await self._publish(step.delay_topic or "", key, value, carried)
            self.delivery_metrics.retried.labels(channel).inc()
        elif step.kind == "dead":
            await self._dead_letter_task(channel, key, ref, step)

    async def _dead_letter_task(
        self, channel: str, key: bytes, ref: RecordRef, step: notify.Step
    ) -> None:
        """DLQ record (the last task, headers saying why), then the DEAD_LETTERED result."""
        assert step.state is not None
        assert step.task is not None
        self.attempts[key] = step.state
        error = step.error or "dead-lettered"
        await self.dead_letters.write(
            ref,
            error,
            key=key,
            value=self.serde.encode(REQUESTED, step.task, topic=self.dlq),
            extra_headers=notify.dead_letter_headers(step.task, step.state),
        )
        self.metrics.sent("notifications.dlq")
        self.results[key] = self._encoded_result(step)
        self.metrics.sent("notifications.results")
        self.delivery_metrics.dead.labels(channel).inc()
        log.info("notification %s dead-lettered: %s", step.task["notification_id"], error)

    def _encoded_result(self, step: notify.Step) -> bytes:
        assert step.result is not None
        topic = self.settings.topic("notifications.results")
        return self.serde.encode(RESULT, step.result, topic=topic)

    async def _publish(
        self, logical: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        await self.kit.send(self.settings.topic(logical), key, value, headers or None)
        self.metrics.sent(logical)

    def reshare(self, owned: set[Any]) -> None:
        """Set each channel's bucket to this worker's share of the group rate."""
        for channel, bucket in self.limits.items():
            topic = self.settings.topic(CHANNEL_TOPICS[channel])
            mine = sum(1 for tp in owned if tp.topic == topic)
            total = catalog_topic(CHANNEL_TOPICS[channel]).partition_count(self.settings.partitions)
            rate = worker_share(self.settings.notifications.rate(channel), mine, total)
            bucket.set_rate(rate)
            self.delivery_metrics.rate.labels(channel).set(rate)

    async def _on_revoked(self, *args: Any, **_: Any) -> None:
        """Give up the revoked partitions' share before another worker takes it over."""
        self.reshare(set(self.app.consumer.assignment()) - set(args[1]))  # (app, revoked)

    async def _on_assigned(self, *args: Any, **_: Any) -> None:
        """The new assignment (the whole of it) decides this worker's share."""
        self.reshare(set(args[1]))  # args: (app, assigned)

    async def _close_senders(self, *_args: Any, **_: Any) -> None:
        """Streams are drained by now: no send is in flight."""
        await self.senders.close()

    async def delay_relay(self) -> None:
        """Run the delay relay in this worker for as long as the worker runs."""
        await self.relay.run()


def _carried_headers(event: faust.EventT[bytes]) -> list[tuple[str, bytes]]:
    """Headers a re-queued task keeps: the redrive token names its generation."""
    token = (event.headers or {}).get(notify.REDRIVE_HEADER)
    return [(notify.REDRIVE_HEADER, token)] if token else []


def create_app(settings: Settings) -> faust.App:
    """A notifications app built from `settings`, owning all its state (`NotificationsStage`)."""
    return NotificationsStage(settings).install()


app = create_app(stage_settings())  # bad settings: one line, no traceback
