"""Dead-lettered notifications: read them back, and redrive them to their channel topic.

notifications.dlq holds two kinds of record: tasks the stage gave up on (the last task as
it was, with headers for the reason, attempts, first and last attempt times, channel and
source coordinates), and records that could not be decoded at all (raw bytes and the
reason). Both are listed; only the first can be redriven.

Redrive semantics: the task goes back to its channel topic under the same notification id,
with attempt 1 and `not_before` now (a fresh attempt budget), and a `sluice.redrive`
header naming the dead letter it came from (`dlq:<partition>:<offset>`). The stage treats
a new token on a dead-lettered id as a new *generation*: it retracts the old
DEAD_LETTERED result (a tombstone on notifications.results) and ends the new generation
in exactly one new result. Redriving the same dead letter again changes nothing (the
token is already known), and an id that was delivered in the meantime is skipped. Only
the most recent dead letter of each id is redriven, so one run opens at most one new
generation per id. Reading never joins a stage's group or commits.
"""

from __future__ import annotations

import collections
import heapq
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Producer

from consumers.tail import StartAt, read
from pipelines.errors import SluiceError
from pipelines.serde import serde_for
from pipelines.settings import Settings

TOPIC = "notifications.dlq"
REQUESTED = "sluice.notifications.NotificationRequested"
REDRIVE_HEADER = "sluice.redrive"
TASK_FIELDS = frozenset({"notification_id", "channel", "attempt", "not_before", "created_at"})


@dataclass(frozen=True)
class DeadLetter:
    """One record of notifications.dlq, with what its headers say."""

    partition: int
    offset: int
    timestamp: int
    key: str | None
    headers: dict[str, str]
    task: dict[str, Any] | None  # None when the record is not a readable task
    problem: str | None = None  # why it is not a task (undecodable, or another schema)

    @property
    def token(self) -> str:
        """The redrive token: which dead letter a redriven task came from."""
        return f"dlq:{self.partition}:{self.offset}"

    @property
    def reason(self) -> str:
        return self.headers.get("sluice.error", "") or (self.problem or "")

    @property
    def channel(self) -> str | None:
        channel = self.headers.get("sluice.channel")
        return channel or (str(self.task["channel"]) if self.task else None)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready view for `sluice dlq list`."""
        h = self.headers
        return {
            "partition": self.partition,
            "offset": self.offset,
            "dead_lettered_at": _int(h.get("sluice.failed_at")) or self.timestamp,
            "notification_id": self.task["notification_id"] if self.task else self.key,
            "channel": self.channel,
            "attempts": _int(h.get("sluice.attempts")),
            "first_attempt_at": _int(h.get("sluice.first_attempt_at")),
            "last_attempt_at": _int(h.get("sluice.last_attempt_at")),
            "reason": self.reason,
            "source": _source(h),
            "redrivable": self.task is not None,
            "undecodable": self.problem,
        }


def dead_letters(settings: Settings, start: StartAt | None = None) -> Iterator[DeadLetter]:
    """Every dead letter from `start` (default: the oldest retained) to the current end."""
    for row in read(settings, TOPIC, start or StartAt("beginning")):
        yield _letter(row)


def recent(settings: Settings, limit: int) -> tuple[list[DeadLetter], int]:
    """The `limit` most recently dead-lettered (oldest first), and how many there are."""
    total = 0

    def counted() -> Iterator[DeadLetter]:
        nonlocal total
        for letter in dead_letters(settings):
            total += 1
            yield letter

    newest = heapq.nlargest(limit, counted(), key=lambda letter: letter.timestamp)
    return newest[::-1], total


@dataclass
class RedriveReport:
    """What a redrive did: re-queued per channel, and what it left alone and why."""

    requeued: collections.Counter[str] = field(default_factory=collections.Counter)
    undecodable: int = 0
    filtered: int = 0
    superseded: int = 0

    @property
    def total(self) -> int:
        return sum(self.requeued.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "requeued": self.total,
            "by_channel": dict(self.requeued),
            "skipped_undecodable": self.undecodable,
            "skipped_other_channel": self.filtered,
            "superseded": self.superseded,
        }


def redrive(
    settings: Settings,
    *,
    channel: str | None = None,
    since_ms: int | None = None,
    timeout_s: float = 30.0,
) -> RedriveReport:
    """Re-queue dead-lettered tasks with a fresh attempt budget (see the module doc)."""
    report = RedriveReport()
    start = StartAt("time", since_ms) if since_ms is not None else StartAt("beginning")
    latest: dict[str, DeadLetter] = {}
    for letter in dead_letters(settings, start):
        if letter.task is None:
            report.undecodable += 1
        elif channel is not None and letter.channel != channel.upper():
            report.filtered += 1
        else:
            nid = letter.task["notification_id"]
            if nid in latest:
                report.superseded += 1
            latest[nid] = letter
    _requeue(settings, list(latest.values()), timeout_s)
    for letter in latest.values():
        report.requeued[str(letter.channel)] += 1
    return report


def _requeue(settings: Settings, letters: list[DeadLetter], timeout_s: float) -> None:
    """Produce the redriven tasks and wait for every acknowledgement (all or an error)."""
    serde = serde_for(settings)
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    producer = Producer(settings.confluent_producer(on_delivery=delivered))
    now = int(time.time() * 1000)
    for letter in letters:
        assert letter.task is not None
        task = {**letter.task, "attempt": 1, "not_before": now, "last_error": letter.reason[:500]}
        topic = settings.topic(f"notifications.{str(task['channel']).lower()}")
        value = serde.encode(REQUESTED, task, topic=topic)
        headers: list[tuple[str, str | bytes | None]] = [(REDRIVE_HEADER, letter.token.encode())]
        producer.produce(topic, value, task["notification_id"].encode(), headers=headers)
        producer.poll(0)
    remaining = producer.flush(timeout_s)
    if failures or remaining:
        problem = failures[0] if failures else f"{remaining} not acknowledged in {timeout_s:.0f}s"
        raise SluiceError(f"redrive incomplete: {len(failures) + remaining} failed ({problem})")


def _letter(row: dict[str, Any]) -> DeadLetter:
    headers = {k: v or "" for k, v in (row.get("headers") or {}).items()}
    value = row.get("value")
    task = value if isinstance(value, dict) and value.keys() >= TASK_FIELDS else None
    problem = None
    if "error" in row:
        problem = str(row["error"])
    elif task is None:
        problem = "not a notification task"
    return DeadLetter(
        partition=int(row["partition"]),
        offset=int(row["offset"]),
        timestamp=int(row["timestamp"]),
        key=row.get("key"),
        headers=headers,
        task=task,
        problem=problem,
    )


def _source(headers: dict[str, str]) -> str | None:
    topic = headers.get("sluice.source.topic")
    if not topic:
        return None
    return (
        f"{topic}[{headers.get('sluice.source.partition')}]@{headers.get('sluice.source.offset')}"
    )


def _int(text: str | None) -> int | None:
    return int(text) if text and text.lstrip("-").isdigit() else None
