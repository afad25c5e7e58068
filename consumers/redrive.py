"""Redrive for orders.dlq and analytics.dlq: a dead letter goes back to its source topic.

A dead letter there is the input record as it was (key and value unchanged) with headers
saying why and where it came from (`sluice.source.topic`, partition, offset). Redriving
one produces its key and value again to that topic, with a `sluice.redrive` header naming
the dead letter (`orders.dlq:<partition>:<offset>`), so the stage takes it like any new
record: a restock dead-lettered while the schema registry was down reaches the stock.

Each dead letter is redriven once. Before sending, the target topics are read from the
oldest candidate's time on for `sluice.redrive` headers; a letter whose token is there
already was redriven before and is skipped (and counted). A second concurrent redrive
could still race; the stages make that harmless, as they do any duplicate: the order
stage deduplicates `orders.placed` by order id and stock requests by request id (a
restock by its adjustment id), and `inventory.results` by the saga's state per order.
A letter that does not decode with its source topic's schema now is left alone (poison
stays poison); one that still fails in the stage comes back as a new dead letter with
the reason, never lost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from consumers.tail import StartAt, header_items, messages
from pipelines.catalog import by_name
from pipelines.errors import RecordError, SluiceError
from pipelines.runtime.deadletter import REDRIVE_HEADER
from pipelines.serde import Serde, serde_for
from pipelines.settings import Settings
from pipelines.topology import stage

SOURCE_HEADER = "sluice.source.topic"
#: Each DLQ's stage reads these topics; a dead letter may only go back to one of them.
SOURCES = {s.dlq: s.inputs for s in (stage("orders"), stage("analytics")) if s.dlq}
#: How far before the oldest dead letter to look for its redriven copy: producers'
#: clocks differ, and a copy's timestamp comes from the redriving machine's clock.
CLOCK_SLACK_MS = 10 * 60 * 1000


@dataclass(frozen=True)
class Letter:
    """One raw dead letter of orders.dlq or analytics.dlq."""

    dlq: str  # the DLQ's catalog name
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def token(self) -> str:
        """Which dead letter a redriven record came from; also its once-only mark."""
        return f"{self.dlq}:{self.partition}:{self.offset}"

    def source(self, settings: Settings) -> str | None:
        """The catalog name of the topic the letter came from, if it may go back there.

        Accepts the header in both forms stages have written: the catalog name
        (`orders.placed`) and the physical one (`demo-1.orders.placed`).
        """
        named = self.headers.get(SOURCE_HEADER) or ""
        logical = settings.logical_topic(named)
        return logical if logical in SOURCES[self.dlq] else None


@dataclass
class SourceReport:
    """What a source redrive did, per DLQ; every letter read is counted once."""

    requeued: Counter[str] = field(default_factory=Counter)  # by source topic
    already_redriven: int = 0
    undecodable: int = 0
    unknown_source: int = 0

    def add(self, other: SourceReport) -> None:
        self.requeued.update(other.requeued)
        self.already_redriven += other.already_redriven
        self.undecodable += other.undecodable
        self.unknown_source += other.unknown_source


def letters(settings: Settings, dlq: str, since_ms: int | None = None) -> Iterator[Letter]:
    """Every dead letter of `dlq` from `since_ms` (default: the oldest retained)."""
    start = StartAt("time", since_ms) if since_ms is not None else StartAt("beginning")
    for msg in messages(settings, dlq, start):
        yield _letter(dlq, msg)


def redrive_sources(
    settings: Settings, dlq: str, *, since_ms: int | None = None, timeout_s: float = 30.0
) -> SourceReport:
    """Send each not yet redriven, decodable dead letter of `dlq` back to its source."""
    report = SourceReport()
    serde = serde_for(settings)
    todo: list[tuple[Letter, str]] = []
    for letter in letters(settings, dlq, since_ms):
        source = letter.source(settings)
        if source is None:
            report.unknown_source += 1
        elif not _decodes(serde, letter, source):
            report.undecodable += 1
        else:
            todo.append((letter, source))
    if todo:
        oldest = min(letter.timestamp for letter, _ in todo) - CLOCK_SLACK_MS
        done = redriven_tokens(settings, {source for _, source in todo}, oldest)
        fresh = [(letter, source) for letter, source in todo if letter.token not in done]
        report.already_redriven = len(todo) - len(fresh)
        _send(settings, fresh, timeout_s)
        report.requeued.update(source for _, source in fresh)
    return report


def redriven_tokens(settings: Settings, topics: Iterable[str], since_ms: int) -> set[str]:
    """The redrive tokens on `topics` in records written from `since_ms` on."""
    found: set[str] = set()
    for topic in sorted(topics):
        for msg in messages(settings, topic, StartAt("time", max(0, since_ms))):
            for name, data in header_items(msg):
                if name == REDRIVE_HEADER and data is not None:
                    found.add(data.decode(errors="replace") if isinstance(data, bytes) else data)
    return found


def _decodes(serde: Serde, letter: Letter, source: str) -> bool:
    schema = by_name()[source].value_schema
    if letter.value is None or schema is None:
        return False
    try:
        serde.decode(letter.value, schema)
    except RecordError:
        return False
    return True


#: One record to redrive: (physical topic, key, value, redrive token).
Redriven = tuple[str, bytes | None, bytes | None, str]


def produce_all(settings: Settings, records: Iterable[Redriven], timeout_s: float) -> None:
    """Produce redriven records, each with its token, and wait for every acknowledgement.

    All or an error: a redrive that was not fully acknowledged says how much failed and
    that running it again is safe (letters already back on their topic are skipped).
    """
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    producer = Producer(settings.confluent_producer(on_delivery=delivered))
    count = 0
    for topic, key, value, token in records:
        headers: list[tuple[str, str | bytes | None]] = [(REDRIVE_HEADER, token.encode())]
        producer.produce(topic, value, key, headers=headers)
        producer.poll(0)
        count += 1
    if not count:
        return
    remaining = producer.flush(timeout_s)
    if failures or remaining:
        problem = failures[0] if failures else f"{remaining} not acknowledged in {timeout_s:.0f}s"
        raise SluiceError(
            f"redrive incomplete: {len(failures) + remaining} of {count} failed ({problem}); "
            "run it again: letters already back on their topic are skipped"
        )


def _send(settings: Settings, todo: list[tuple[Letter, str]], timeout_s: float) -> None:
    """Produce the letters to their sources, key and value unchanged."""
    records = (
        (settings.topic(source), letter.key, letter.value, letter.token) for letter, source in todo
    )
    produce_all(settings, records, timeout_s)


def _letter(dlq: str, msg: Message) -> Letter:
    headers = {
        name: (data.decode(errors="replace") if isinstance(data, bytes) else data or "")
        for name, data in header_items(msg)
    }
    return Letter(
        dlq=dlq,
        partition=int(msg.partition() or 0),
        offset=int(msg.offset() or 0),
        timestamp=int(msg.timestamp()[1]),
        key=msg.key(),
        value=msg.value(),
        headers=headers,
    )
