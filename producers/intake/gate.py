"""Backpressure at the front door: refuse (or hold) new orders while the order stage lags.

A background task measures the lag of the order stage's group on `orders.placed`
(`EDGES["intake"]`) every `interval_s`, through the same `LagSignal` and hysteresis the
Faust controller uses. While it is paused, `admit` either sheds at once (429 with a
`Retry-After` from the lag and the group's drain rate) or, in queue mode, holds up to
`queue_limit` requests until the lag is back under the low mark, and answers 429 beyond
that bound and 503 for a request held longer than `queue_timeout_s`. Shedding is the
default: a client that retries later costs nothing, while held requests cost sockets
and memory and only help clients that cannot retry.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from confluent_kafka import Consumer, KafkaException, TopicPartition

from pipelines.backpressure import Hysteresis, LagSignal
from pipelines.errors import BrokerUnavailable, SluiceError
from pipelines.lag import PartitionLag, total
from producers.intake.validation import Rejection

log = logging.getLogger(__name__)


class Signal(Protocol):
    """What the gate reads: `pipelines.backpressure.LagSignal` satisfies it."""

    state: Hysteresis
    lag: int

    def ameasure(self) -> Awaitable[str | None]: ...

    def retry_after_s(self, floor: float = 1.0, ceiling: float = 120.0) -> float: ...


@dataclass
class ConsumerLagSignal(LagSignal):
    """`LagSignal` whose committed offsets come from a long-lived consumer, not the admin API.

    librdkafka's admin ListConsumerGroupOffsets dereferences a missing group handle when
    the broker answers NOT_COORDINATOR (a fresh cluster, a broker restart, a coordinator
    move) and the whole process dies with SIGSEGV (confluent-kafka-python issue 1982,
    librdkafka issue 5040). A consumer that carries the watched group's id asks through its
    own group handle, which retries that answer. It never subscribes, so it never joins
    the group or commits for it; keeping it open also spares a client per measurement.
    """

    timeout_s: float = 5.0
    _consumer: Consumer | None = field(default=None, init=False, repr=False)

    def measure(self) -> str | None:
        """Read the lag once (blocking); returns a transition, if any."""
        rows = self._rows()
        self.per_partition = {(r.topic, r.partition): r.lag for r in rows}
        self.lag = total(rows)
        self._history.append((time.monotonic(), sum(r.committed or 0 for r in rows)))
        return self.state.update(self.lag)

    def _rows(self) -> list[PartitionLag]:
        group = self.settings.group(self.edge.group)
        consumer = self._client(group)
        try:
            wanted = []
            for topic in (self.settings.topic(t) for t in self.edge.topics):
                metadata = consumer.list_topics(topic, timeout=self.timeout_s)
                wanted += [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
            rows = []
            for tp in consumer.committed(wanted, timeout=self.timeout_s):
                if tp.error is not None:
                    raise KafkaException(tp.error)
                end = consumer.get_watermark_offsets(tp, timeout=self.timeout_s, cached=False)[1]
                done = tp.offset if tp.offset >= 0 else None
                rows.append(PartitionLag(group, tp.topic, tp.partition, done, end))
        except KafkaException as exc:
            reason = exc.args[0]
            raise BrokerUnavailable(f"cannot read the lag of group {group}: {reason}") from None
        return rows

    def _client(self, group: str) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                self.settings.confluent(
                    **{
                        "group.id": group,
                        "client.id": f"sluice-intake-lag-{uuid.uuid4().hex[:6]}",
                        "enable.auto.commit": False,
                        "enable.auto.offset.store": False,
                    }
                )
            )
        return self._consumer

    def close(self) -> None:
        """Close the consumer (it never joined the group, so this leaves nothing behind)."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds (RFC 9110 delay-seconds), at least 1."""
    return str(max(1, math.ceil(seconds)))


class Gate:
    """Admission control on one lag signal; no signal means always open."""

    def __init__(
        self,
        signal: Signal | None,
        *,
        mode: Literal["shed", "queue"] = "shed",
        queue_limit: int = 1000,
        queue_timeout_s: float = 30.0,
        interval_s: float = 1.0,
        on_transition: Callable[[str, int], None] | None = None,
    ) -> None:
        self.signal = signal
        self.mode = mode
        self.queue_limit = queue_limit
        self.queue_timeout_s = queue_timeout_s
        self.interval_s = interval_s
        self.on_transition = on_transition
        self.waiting = 0
        self.failures = 0
        self._open = asyncio.Event()
        self._open.set()

    @property
    def paused(self) -> bool:
        return self.signal is not None and self.signal.state.paused

    async def measure(self) -> None:
        """Measure once and open or close the gate; a failed measurement keeps the state."""
        if self.signal is None:
            return
        try:
            transition = await self.signal.ameasure()
        except (SluiceError, KafkaException) as exc:
            self.failures += 1
            if self.failures == 1:
                log.warning(
                    "cannot measure the order stage's lag (keeping the last state): %s", exc
                )
            return
        self.failures = 0
        if transition is not None:
            log.warning("intake %s: order stage lag %d", transition, self.signal.lag)
            if self.on_transition is not None:
                self.on_transition(transition, self.signal.lag)
        self.sync()

    def sync(self) -> None:
        """Make the event that held requests wait on match the signal's state."""
        if self.paused:
            self._open.clear()
        else:
            self._open.set()

    async def watch(self) -> None:
        """Measure every `interval_s` until cancelled."""
        while True:
            await self.measure()
            await asyncio.sleep(self.interval_s)

    async def admit(self) -> None:
        """Return when a new order may be published; raise a Rejection when it may not."""
        if not self.paused:
            return
        if self.mode == "shed":
            raise self._refusal(429, "the order pipeline is behind")
        if self.waiting >= self.queue_limit:
            raise self._refusal(429, f"the order pipeline is behind and {self.waiting} are queued")
        self.sync()
        self.waiting += 1
        try:
            await asyncio.wait_for(self._open.wait(), self.queue_timeout_s)
        except TimeoutError:
            raise self._refusal(
                503, f"the order pipeline stayed behind for {self.queue_timeout_s:.0f}s"
            ) from None
        finally:
            self.waiting -= 1

    def _refusal(self, status: int, reason: str) -> Rejection:
        assert self.signal is not None
        seconds = self.signal.retry_after_s()
        marks = self.signal.state
        return Rejection(
            status,
            f"{reason} (lag {self.signal.lag} records, resumes below {marks.low}); "
            f"retry after {retry_after(seconds)} s",
            headers={"Retry-After": retry_after(seconds)},
        )
