"""Dead letters: list every DLQ, and redrive each kind back where it can be taken again.

`sluice dlq list` shows orders.dlq, notifications.dlq and analytics.dlq together. The
redrive of orders.dlq and analytics.dlq (each letter back to its source topic) is in
`consumers.redrive`; this module redrives notifications and adds the reports up.

notifications.dlq holds two kinds of record: tasks the stage gave up on (the last task as
it was, with headers for the reason, attempts, first and last attempt times, channel and
source coordinates), and records that could not be decoded at all (raw bytes and the
reason). Both are listed; only the first can be redriven.

Redrive semantics: the task goes back to its channel topic under the same notification id,
with attempt 1 and `not_before` now (a fresh attempt budget), and a `sluice.redrive`
header naming the dead letter it came from (`dlq:<partition>:<offset>`). The stage treats
a new token on a dead-lettered id as a new *generation*: it retracts the old
DEAD_LETTERED result (a tombstone on notifications.results) and ends the new generation
in exactly one new result. A dead letter is redriven once: its token on the channel
topic (written after the letter) means an earlier redrive sent it, so it is skipped and
counted; were it sent twice anyway, the stage ignores a token it has already seen. Only
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

from consumers.redrive import (
    CLOCK_SLACK_MS,
    Redriven,
    SourceReport,
    produce_all,
    redrive_sources,
    redriven_tokens,
)
from consumers.redrive import SOURCES as SOURCE_REDRIVES
from consumers.tail import StartAt, read
from pipelines.serde import serde_for
from pipelines.settings import Settings
from pipelines.topology import channel_topic

TOPIC = "notifications.dlq"
#: Every DLQ, in the order `sluice dlq list` and `redrive` take them.
DLQS = ("orders.dlq", TOPIC, "analytics.dlq")
REQUESTED = "sluice.notifications.NotificationRequested"
TASK_FIELDS = frozenset({"notification_id", "channel", "attempt", "not_before", "created_at"})


@dataclass(frozen=True)
class DeadLetter:
    """One record of a DLQ, with what its headers say (a task only in notifications.dlq)."""

    partition: int
    offset: int
    timestamp: int
    key: str | None
    headers: dict[str, str]
    task: dict[str, Any] | None  # None when the record is not a readable task
    problem: str | None = None  # why it cannot be redriven (undecodable, another schema)
    dlq: str = TOPIC

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

    def _id(self) -> str | None:
        """An undecodable notification's key is the best guess at its id."""
        return self.key if self.dlq == TOPIC else None

    def summary(self) -> dict[str, Any]:
        """A JSON-ready view for `sluice dlq list`."""
        h = self.headers
        return {
            "dlq": self.dlq,
            "partition": self.partition,
            "offset": self.offset,
            "dead_lettered_at": _int(h.get("sluice.failed_at")) or self.timestamp,
            "key": self.key,
            "notification_id": self.task["notification_id"] if self.task else self._id(),
            "channel": self.channel,
            "attempts": _int(h.get("sluice.attempts")),
            "first_attempt_at": _int(h.get("sluice.first_attempt_at")),
            "last_attempt_at": _int(h.get("sluice.last_attempt_at")),
            "reason": self.reason,
            "source": _source(h),
            "redrivable": self.problem is None,
            "undecodable": self.problem,
        }


def dead_letters(
    settings: Settings, start: StartAt | None = None, dlq: str = TOPIC
) -> Iterator[DeadLetter]:
    """Every dead letter of `dlq` from `start` (default: the oldest retained) to the end."""
    for row in read(settings, dlq, start or StartAt("beginning")):
        yield _letter(row) if dlq == TOPIC else _source_letter(settings, dlq, row)


def recent(
    settings: Settings, limit: int, dlqs: tuple[str, ...] = DLQS
) -> tuple[list[DeadLetter], int]:
    """The `limit` most recently dead-lettered of `dlqs` (oldest first), and how many."""
    total = 0

    def counted() -> Iterator[DeadLetter]:
        nonlocal total
        for dlq in dlqs:
            for letter in dead_letters(settings, dlq=dlq):
                total += 1
                yield letter

    newest = heapq.nlargest(limit, counted(), key=lambda letter: letter.timestamp)
    return newest[::-1], total


@dataclass
class RedriveReport:
    """What a redrive did: re-queued per channel and source, what it left alone and why."""

    requeued: collections.Counter[str] = field(default_factory=collections.Counter)
    undecodable: int = 0
    filtered: int = 0
    superseded: int = 0
    already_redriven: int = 0
    sources: SourceReport = field(default_factory=SourceReport)

    @property
    def total(self) -> int:
        return sum(self.requeued.values()) + sum(self.sources.requeued.values())

    @property
    def skipped(self) -> int:
        return self.already_redriven + self.sources.already_redriven

    def as_json(self) -> dict[str, Any]:
        return {
            "requeued": self.total,
            "by_channel": dict(self.requeued),
            "by_source_topic": dict(self.sources.requeued),
            "skipped_already_redriven": self.skipped,
            "skipped_undecodable": self.undecodable + self.sources.undecodable,
            "skipped_unknown_source": self.sources.unknown_source,
            "skipped_other_channel": self.filtered,
            "superseded": self.superseded,
        }


def redrive_all(
    settings: Settings,
    dlqs: tuple[str, ...] = DLQS,
    *,
    channel: str | None = None,
    since_ms: int | None = None,
) -> RedriveReport:
    """Redrive every DLQ in `dlqs` (notifications to their channel, others to their source)."""
    report = redrive(settings, channel=channel, since_ms=since_ms) if TOPIC in dlqs else None
    report = report or RedriveReport()
    for dlq in dlqs:
        if dlq != TOPIC:
            report.sources.add(redrive_sources(settings, dlq, since_ms=since_ms))
    return report


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
    fresh = _not_yet_redriven(settings, list(latest.values()))
    report.already_redriven = len(latest) - len(fresh)
    _requeue(settings, fresh, timeout_s)
    for letter in fresh:
        report.requeued[str(letter.channel)] += 1
    return report


def _not_yet_redriven(settings: Settings, letters: list[DeadLetter]) -> list[DeadLetter]:
    """Those of `letters` whose token is on no channel topic yet."""
    if not letters:
        return []
    topics = {_channel_topic(letter) for letter in letters}
    oldest = min(letter.timestamp for letter in letters) - CLOCK_SLACK_MS
    done = redriven_tokens(settings, topics, oldest)
    return [letter for letter in letters if letter.token not in done]


def _channel_topic(letter: DeadLetter) -> str:
    assert letter.task is not None
    return channel_topic(str(letter.task["channel"]))


def _requeue(settings: Settings, letters: list[DeadLetter], timeout_s: float) -> None:
    """Produce the redriven tasks, each a first attempt due now, and wait for every ack."""
    serde = serde_for(settings)
    now = int(time.time() * 1000)

    def records() -> Iterator[Redriven]:
        for letter in letters:
            assert letter.task is not None
            task = {**letter.task, "attempt": 1, "not_before": now}
            task["last_error"] = letter.reason[:500]
            topic = settings.topic(_channel_topic(letter))
            value = serde.encode(REQUESTED, task, topic=topic)
            yield topic, task["notification_id"].encode(), value, letter.token

    produce_all(settings, records(), timeout_s)


def _letter(row: dict[str, Any]) -> DeadLetter:
    value = row.get("value")
    task = value if isinstance(value, dict) and value.keys() >= TASK_FIELDS else None
    problem = _row_problem(row) or (None if task is not None else "not a notification task")
    return _dead_letter(row, task=task, problem=problem)


def _source_letter(settings: Settings, dlq: str, row: dict[str, Any]) -> DeadLetter:
    """A letter of orders.dlq or analytics.dlq, as the list shows it."""
    source = settings.logical_topic(_headers(row).get("sluice.source.topic", ""))
    problem = _row_problem(row)
    if problem is None and source not in SOURCE_REDRIVES[dlq]:
        problem = f"no source topic {dlq}'s stage reads (header: {source or 'missing'})"
    return _dead_letter(row, task=None, problem=problem, dlq=dlq)


def _row_problem(row: dict[str, Any]) -> str | None:
    """Why a row cannot be redriven whatever its DLQ: undecodable, or a null value."""
    if "error" in row:
        return str(row["error"])
    return "a null value" if row.get("value") is None else None


def _dead_letter(row: dict[str, Any], **fields: Any) -> DeadLetter:
    return DeadLetter(
        partition=int(row["partition"]),
        offset=int(row["offset"]),
        timestamp=int(row["timestamp"]),
        key=row.get("key"),
        headers=_headers(row),
        **fields,
    )


def _headers(row: dict[str, Any]) -> dict[str, str]:
    return {k: v or "" for k, v in (row.get("headers") or {}).items()}


def _source(headers: dict[str, str]) -> str | None:
    topic = headers.get("sluice.source.topic")
    if not topic:
        return None
    return (
        f"{topic}[{headers.get('sluice.source.partition')}]@{headers.get('sluice.source.offset')}"
    )


def _int(text: str | None) -> int | None:
    return int(text) if text and text.lstrip("-").isdigit() else None
