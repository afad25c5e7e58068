"""Start-up recovery: what a restarted intake learns again from `orders.placed`.

Every order in the idempotency window is re-read once, before the intake listens: its
id (the Kafka key, no decoding needed) seeds the status view as ACCEPTED, and the
records the intake itself published with an Idempotency-Key (they carry the
`sluice.intake.fingerprint` header) are decoded for their `client_ref`, which gives the
key back. Only those few records pay for Avro decoding, so recovery costs about one
consumed message per order and scales with the window, not with the decoding.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, Message

from consumers.tail import StartAt, resolved_starts, start_partitions, watermarks
from pipelines.errors import RecordError, TopicError
from pipelines.serde import Serde, serde_for
from pipelines.settings import Settings
from producers.intake.idempotency import FINGERPRINT_HEADER
from producers.intake.validation import PLACED


@dataclass(frozen=True, slots=True)
class Placed:
    """One re-read order: its id, when it was written, and its key and digest if keyed."""

    order_id: str
    timestamp_ms: int
    key: str | None = None
    fingerprint: str | None = None


def recent_placed(settings: Settings, window_s: float) -> Iterator[Placed]:
    """Every order on `orders.placed` written in the last `window_s`, up to the end now.

    Blocking; reads by explicit assignment with a throwaway group that never commits.
    """
    topic = settings.topic("orders.placed")
    consumer = Consumer(
        settings.confluent(
            **{
                "group.id": f"sluice-intake-recovery-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
    )
    try:
        ends = _assign(consumer, settings, topic, int((time.time() - window_s) * 1000))
        serde = serde_for(settings)
        while not reached(consumer, ends):
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is None:
                    yield _placed(msg, serde)
    finally:
        consumer.close()


def _assign(consumer: Consumer, settings: Settings, topic: str, since_ms: int) -> dict[int, int]:
    """Assign every partition at the first offset written since `since_ms`; return the ends."""
    timeout = settings.request_timeout_s
    metadata = consumer.list_topics(topic, timeout=timeout)
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        raise TopicError(f"unknown topic {topic} on {settings.bootstrap_servers}")
    count = len(metadata.topics[topic].partitions)
    marks = watermarks(consumer, topic, count, timeout)
    starts = start_partitions(consumer, topic, count, StartAt("time", since_ms), timeout)
    first = resolved_starts(starts, marks)
    consumer.assign(starts)
    return {p: high for p, (_low, high) in marks.items() if first[p] < high}


def _placed(msg: Message, serde: Serde) -> Placed:
    order_id = (msg.key() or b"").decode(errors="replace")
    stamp = int(msg.timestamp()[1])
    digest = dict(msg.headers() or []).get(FINGERPRINT_HEADER)
    if digest is None:
        return Placed(order_id, stamp)
    try:
        record = serde.decode(msg.value() or b"", PLACED)
    except RecordError:  # not ours after all; the order stage dead-letters it
        return Placed(order_id, stamp)
    key = record.get("client_ref")
    text = digest.decode() if isinstance(digest, bytes) else str(digest)
    return Placed(order_id, stamp, str(key) if key else None, text)


def reached(consumer: Consumer, ends: dict[int, int]) -> bool:
    """True once every partition's fetch position passed its end offset in `ends`.

    Positions (not the last record's offset) are compared: compacted-away records and
    transaction markers take offsets no consumer ever sees. A partition not in `ends`
    had nothing to read.
    """
    if not ends:
        return True
    for tp in consumer.position(consumer.assignment()):
        end = ends.get(tp.partition)
        if end is not None and tp.offset < end:  # negative: nothing fetched there yet
            return False
    return True
