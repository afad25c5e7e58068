"""`sluice consume`: read a topic from a point in time and show each record decoded.

Reads by explicit partition assignment with a throwaway group that never commits, so
looking at a topic never moves any stage's offsets. An undecodable record is shown as
such, with the reason; it is never skipped silently.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)

from pipelines import admin
from pipelines.catalog import by_name
from pipelines.errors import BrokerUnavailable, RecordError, RecordRef, TopicError
from pipelines.eventtime import MAX_EVENT_MS, MIN_EVENT_MS
from pipelines.serde import Serde, serde_for
from pipelines.settings import Settings


@dataclass(frozen=True)
class StartAt:
    """Where reading starts: the end (new records only), the beginning, or a time."""

    kind: Literal["end", "beginning", "time"] = "end"
    time_ms: int | None = None


def start_partitions(
    consumer: Consumer, topic: str, partitions: int, start: StartAt, timeout: float
) -> list[TopicPartition]:
    """Starting offsets per partition; a time maps through the broker's time index."""
    if start.kind == "time":
        wanted = [TopicPartition(topic, p, start.time_ms or 0) for p in range(partitions)]
        found = consumer.offsets_for_times(wanted, timeout=timeout)
        return [
            TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
            for tp in found
        ]
    offset = OFFSET_BEGINNING if start.kind == "beginning" else OFFSET_END
    return [TopicPartition(topic, p, offset) for p in range(partitions)]


def watermarks(
    consumer: Consumer, topic: str, partitions: int, timeout: float
) -> dict[int, tuple[int, int]]:
    """(log-start, log-end) offsets of each partition now, retrying leader elections."""
    return {p: watermark(consumer, TopicPartition(topic, p), timeout) for p in range(partitions)}


def watermark(consumer: Consumer, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0]
            if not admin.passing(error) or time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"cannot read offsets of {tp.topic}[{tp.partition}]: {exc.args[0].str()}"
                ) from None
            time.sleep(0.2)


def resolved_starts(
    starts: list[TopicPartition], marks: dict[int, tuple[int, int]]
) -> dict[int, int]:
    """Concrete starting offsets, turning BEGINNING/END into the watermarks they mean."""
    out = {}
    for tp in starts:
        low, high = marks[tp.partition]
        if tp.offset == OFFSET_BEGINNING:
            out[tp.partition] = low
        elif tp.offset == OFFSET_END:
            out[tp.partition] = high
        else:
            out[tp.partition] = tp.offset
    return out


def read(
    settings: Settings,
    topic: str,
    start: StartAt,
    *,
    limit: int | None = None,
    follow: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield one row per record: coordinates, key, and the decoded value or the error."""
    logical = settings.logical_topic(topic)
    if topic in by_name():
        logical = topic
    reader = by_name()[logical].value_schema if logical in by_name() else None
    serde = serde_for(settings)
    for count, msg in enumerate(messages(settings, topic, start, follow=follow), start=1):
        yield row(msg, serde, reader)
        if limit is not None and count >= limit:
            return


def messages(
    settings: Settings, topic: str, start: StartAt, *, follow: bool = False
) -> Iterator[Message]:
    """The raw records of `topic` (a catalog name gets the prefix) from `start`.

    Without `follow`, up to each partition's end as it was when reading began. Reads by
    assignment with a throwaway group that never commits.
    """
    if topic in by_name():
        topic = settings.topic(topic)
    shape = admin.list_topics(settings).get(topic)
    if shape is None:
        raise TopicError(f"unknown topic {topic!r} on {settings.bootstrap_servers}")
    consumer = Consumer(
        settings.confluent(
            **{
                "group.id": f"sluice-consume-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
    )
    timeout = settings.request_timeout_s
    try:
        marks = watermarks(consumer, topic, shape.partitions, timeout)
        starts = start_partitions(consumer, topic, shape.partitions, start, timeout)
        bounds = None
        if not follow:
            bounds = (resolved_starts(starts, marks), {p: high for p, (_l, high) in marks.items()})
        consumer.assign(starts)
        yield from _messages(consumer, bounds)
    finally:
        consumer.close()


Bounds = tuple[dict[int, int], dict[int, int]]


def _messages(consumer: Consumer, bounds: Bounds | None) -> Iterator[Message]:
    """Records as they come; with `bounds`, until every partition reached its end.

    Checked before each fetch, so an empty or fully read topic costs no wait, and
    short waits (a fetch returns at its timeout unless 500 records arrived).
    """
    wait = 0.5 if bounds is None else 0.1
    while bounds is None or not _caught_up(consumer, *bounds):
        for msg in consumer.consume(500, timeout=wait):
            if msg.error() is None:
                yield msg


def _caught_up(consumer: Consumer, starts: dict[int, int], ends: dict[int, int]) -> bool:
    """True when every partition's next fetch position reached the end taken at the start.

    Positions (not the last record's offset) are compared because transaction markers and
    compacted-away records occupy offsets that no consumer ever sees.
    """
    for tp in consumer.position(consumer.assignment()):
        position = tp.offset if tp.offset >= 0 else starts[tp.partition]
        if position < ends[tp.partition]:
            return False
    return True


def row(msg: Message, serde: Serde, reader: str | None) -> dict[str, Any]:
    """A printable dict for one message."""
    key, value = msg.key(), msg.value()
    out: dict[str, Any] = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": msg.timestamp()[1],
        "key": _text(key),
    }
    headers = header_items(msg)
    if headers:
        out["headers"] = {name: _text(data) for name, data in headers}
    if value is None:
        out["value"] = None
        return out
    ref = RecordRef(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, key, value)
    try:
        out["value"] = serde.decode(value, reader, source=ref)
    except RecordError as exc:
        out["error"] = f"undecodable: {exc}"
        out["raw_base64"] = base64.b64encode(value[:256]).decode()
    return out


def header_items(msg: Message) -> list[tuple[str, str | bytes | None]]:
    """A record's headers as (name, value) pairs (the client returns a list of them)."""
    headers = msg.headers()
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


def _text(data: bytes | str | None) -> str | None:
    if data is None or isinstance(data, str):
        return data
    try:
        return data.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode()


def parse_time(text: str) -> int:
    """An ISO-8601 time (naive means UTC) or epoch milliseconds, as epoch milliseconds.

    Only times Kafka and the event-time range can hold (1970 to 9999): a larger number
    would overflow the client's 64-bit offset lookup after the broker was contacted.
    """
    from datetime import UTC, datetime

    if text.isascii() and text.isdigit():
        ms = int(text)
    else:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an ISO-8601 time or epoch milliseconds: {text!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        ms = int(parsed.timestamp() * 1000)
    if not MIN_EVENT_MS <= ms <= MAX_EVENT_MS:
        raise ValueError(f"{text!r} is outside 1970-01-01T00:00Z..9999-12-31T23:59:59.999Z")
    return ms


def now_ms() -> int:
    return int(time.time() * 1000)
