"""The sending half of every producer script: idempotent, counted, never dropping.

Each record's delivery report is counted (acknowledged or failed, with the broker's
reason), a full local queue makes the sender wait and serve callbacks instead of
discarding, and the summary always adds up: sent = acknowledged + failed.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from pipelines import admin
from pipelines.errors import NotAuthorized, SluiceError, TopicError
from pipelines.settings import Settings
from pipelines.stats import Reservoir, rounded


class DeliveryFailed(SluiceError):
    """The broker refused records in a way retrying will not fix (authorization, size)."""


@dataclass
class SendStats:
    """Counts that must add up: every record sent is acknowledged or failed."""

    sent: int = 0
    acked: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latency_ms: Reservoir = field(default_factory=Reservoir)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    throttled_s: float = 0.0

    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def summary(self) -> dict[str, Any]:
        elapsed = self.elapsed()
        return {
            "sent": self.sent,
            "acknowledged": self.acked,
            "failed": self.failed,
            "elapsed_s": round(elapsed, 2),
            "events_per_s": round(self.acked / elapsed, 1) if elapsed > 0 else None,
            "delivery_p50_ms": rounded(self.latency_ms.quantile(0.50)),
            "delivery_p99_ms": rounded(self.latency_ms.quantile(0.99)),
            "throttled_s": round(self.throttled_s, 2),
            "errors": dict(self.errors),
        }


class RateLimiter:
    """A steady token bucket: `rate` events per second, bursts of at most `burst`; 0 = unlimited."""

    def __init__(
        self,
        rate: float,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self.rate = rate
        self.burst = burst if burst is not None else max(1, int(rate / 10))
        self._clock, self._sleep = clock, sleep
        self._tokens = float(self.burst)
        self._last = clock()

    def acquire(self, idle: Callable[[float], None] | None = None) -> None:
        """Take one token, waiting (via `idle(seconds)`, e.g. polling a producer) if needed."""
        if self.rate == 0:
            return
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0 - 1e-9:  # tolerate float dust, or tiny waits never end
                self._tokens = max(0.0, self._tokens - 1.0)
                return
            wait = (1.0 - self._tokens) / self.rate
            (idle or self._sleep)(wait)


STATS_INTERVAL_MS = 100  # librdkafka statistics: how soon `warm` sees the producer id

FATAL_CODES = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError._MSG_TIMED_OUT,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
    }
)


class EventSender:
    """An idempotent producer (acks=all) that counts every delivery report.

    One delivery callback serves all records (set in the producer's configuration, no
    closure per record) and latency comes from librdkafka's own per-message timing, so
    the accounting costs a few hundred nanoseconds a record.
    """

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        conf = {
            "linger.ms": 10,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 200_000,
            "message.timeout.ms": 120_000,
            "on_delivery": self._delivered,
            # librdkafka's statistics are the only place it says it has its producer id
            "statistics.interval.ms": STATS_INTERVAL_MS,
            "stats_cb": self._statistics,
            **overrides,
        }
        self.config = settings.confluent_producer(**conf)
        self.producer = Producer(self.config)
        self.stats = SendStats()
        self.fatal: KafkaError | None = None
        self.has_producer_id = False

    def warm(self, topic: str, timeout: float = 10.0) -> None:
        """Connect, and get an idempotent producer its id, before the first record is made.

        librdkafka connects lazily, and an idempotent producer asks for its producer id
        only once a broker connection is up, on a 500 ms timer: without this, a new
        producer's first records wait up to half a second in its queue (1 s on a fresh
        broker) after the generator stamped their event times. A metadata request opens
        the connection at once; the producer id can still come up to 500 ms later
        (measured after a 5 ms metadata request: first delivery 502 ms, twice in three
        tries), so this also waits until librdkafka's statistics report the id assigned.
        Best effort: an unreachable broker is reported by the sends, as before.
        """
        deadline = time.monotonic() + timeout
        with contextlib.suppress(KafkaException):
            self.producer.list_topics(topic, timeout=timeout)
        if not self.config.get("enable.idempotence"):
            return
        while not self.has_producer_id and time.monotonic() < deadline:
            self.producer.poll(STATS_INTERVAL_MS / 1000 / 4)

    def _statistics(self, report: str) -> None:
        """librdkafka's statistics callback: notes when the producer id is assigned."""
        if self.has_producer_id:
            return
        with contextlib.suppress(ValueError, AttributeError):
            eos = json.loads(report).get("eos") or {}
            self.has_producer_id = eos.get("idemp_state") == "Assigned"

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        partition: int = -1,
    ) -> None:
        """Queue one record (to `partition`, or where the partitioner puts its key); when
        the local queue is full, wait for room rather than drop."""
        produce = self.producer.produce
        while True:
            try:
                produce(topic, value, key, partition, headers=headers)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.stats.sent += 1
        self.producer.poll(0)
        if self.fatal is not None:
            raise DeliveryFailed(f"the broker refused records for {topic}: {self.fatal.str()}")

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            self.stats.acked += 1
            latency = msg.latency()
            if latency is not None:
                self.stats.latency_ms.add(latency * 1000)
            return
        self.stats.failed += 1
        self.stats.errors[err.str()] += 1
        if err.code() in FATAL_CODES or err.fatal():
            self.fatal = err

    def poll(self, seconds: float) -> None:
        """Serve delivery callbacks for up to `seconds` (used while rate limiting)."""
        self.producer.poll(seconds)

    def close(self, timeout: float = 120.0) -> SendStats:
        """Flush; anything still undelivered after `timeout` counts as failed."""
        remaining = self.producer.flush(timeout)
        if remaining:
            self.stats.failed += remaining
            self.stats.errors[f"not delivered within {timeout:.0f}s"] += remaining
        self.stats.finished = time.monotonic()
        return self.stats


CREATED_LAG_S = 3.0  # how long a missing topic may still be on its way to every broker


def require_topics(settings: Settings, *topics: str) -> None:
    """Fail fast, with the fix in the message, when a topic does not exist on the cluster.

    A broker learns of a topic created a moment ago through the cluster's metadata log,
    a little after the broker that created it: on a 3-node cluster a seed right after
    `sluice topics create` was told "unknown topic" by a broker not yet caught up. So a
    missing topic is looked for again for up to `CREATED_LAG_S` before it is reported.
    """
    deadline = time.monotonic() + CREATED_LAG_S
    while True:
        existing = admin.list_topics(settings)
        missing = [t for t in topics if settings.topic(t) not in existing]
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    denied = admin.unauthorized_topics(settings, [settings.topic(t) for t in missing])
    if denied:
        raise NotAuthorized(
            f"{settings.security.describe()} may not use topic {', '.join(denied)} on "
            f"{settings.bootstrap_servers}: no ACL allows it (log in as the principal that "
            "owns it, or ask an admin for access)"
        )
    if missing:
        raise TopicError(
            f"unknown topic {', '.join(settings.topic(t) for t in missing)} on "
            f"{settings.bootstrap_servers}; "
            "create the pipeline topics with `sluice topics create`"
        )
