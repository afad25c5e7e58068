"""One dead-letter writer for every stage: the record as it came, and headers saying why.

Every stage (orders, notifications and its delay relay, analytics) dead-letters through
`DeadLetters`, so a DLQ record always has the same shape: the source key and value
unchanged (a null value stays null, it is not turned into empty bytes), and headers with
the reason, the stage, and the *physical* source topic, partition and offset, i.e. the
topic name with its prefix, which is what `kcat`, `kafka-console-consumer` or a redrive
must be pointed at. A stage may put another value in the letter (the notifications stage
dead-letters the last task it built, not the first one it read) and add headers of its own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from pipelines.errors import RecordRef

#: How a writer hands a record to Kafka: (physical topic, key, value, headers) -> anything.
Send = Callable[[str, bytes | None, bytes | None, list[tuple[str, bytes]]], Awaitable[Any]]

ERROR_HEADER = "sluice.error"
#: On a record `sluice dlq redrive` re-sent: which dead letter it was (`<dlq>:<p>:<offset>`).
REDRIVE_HEADER = "sluice.redrive"
MAX_ERROR_BYTES = 1000


class _Unchanged:
    """Marker: dead-letter the source record's own value."""


UNCHANGED = _Unchanged()


def dlq_headers(ref: RecordRef, error: str, stage: str) -> list[tuple[str, bytes]]:
    """Headers that say where a dead letter came from (the physical topic) and why."""
    return [
        (ERROR_HEADER, error.encode(errors="replace")[:MAX_ERROR_BYTES]),
        ("sluice.stage", stage.encode()),
        ("sluice.source.topic", ref.topic.encode()),
        ("sluice.source.partition", str(ref.partition).encode()),
        ("sluice.source.offset", str(ref.offset).encode()),
        ("sluice.failed_at", str(int(time.time() * 1000)).encode()),
    ]


def redriven_for_another(headers: Mapping[str, Any] | None, dlq: str) -> bool:
    """Whether a record is a dead letter of another stage's DLQ, redriven to a topic this
    stage reads too: skip it, this stage had the original.

    `orders.placed`, for one, is read by the order stage and by analytics. An order the
    order stage dead-lettered was counted by analytics all the same; redriven from
    `orders.dlq`, it must reach the order stage only, or analytics would count it twice
    (and an analytics letter redriven there would be a second placement to the order
    stage). The token names the DLQ it came from, so the stage it is meant for is known.
    Costs a truth test on the hot path when a record has no headers.
    """
    if not headers:
        return False
    token = headers.get(REDRIVE_HEADER)
    if token is None:
        return False
    text = token.decode(errors="replace") if isinstance(token, bytes) else str(token)
    return not text.startswith(dlq + ":")


def reason_label(error: str) -> str:
    """A short metric label for an error: the text before its first colon, at most 40 chars."""
    return error.split(":", 1)[0][:40]


class DeadLetters:
    """Writes one stage's dead letters to its DLQ topic and counts them.

    `topic` is physical (prefix included); `send` is the stage's producer path, so the
    letter is covered by the same flush-before-commit as the stage's other outputs.
    `counter` is the stage's `sluice_dead_letters` metric (labels: stage, reason).
    """

    def __init__(self, stage: str, topic: str, send: Send, counter: Any) -> None:
        self.stage, self.topic, self._send, self._counter = stage, topic, send, counter

    async def write(
        self,
        ref: RecordRef,
        error: str,
        *,
        key: bytes | _Unchanged | None = UNCHANGED,
        value: bytes | _Unchanged | None = UNCHANGED,
        extra_headers: Iterable[tuple[str, bytes]] = (),
    ) -> Any:
        """Dead-letter `ref` (or `key`/`value` in its place) with `error`; returns what
        the send returned (for the relay: a future to wait for with its other sends)."""
        self._counter.labels(self.stage, reason_label(error)).inc()
        letter_key = ref.key if isinstance(key, _Unchanged) else key
        body = ref.value if isinstance(value, _Unchanged) else value
        headers = dlq_headers(ref, error, self.stage) + list(extra_headers)
        return await self._send(self.topic, letter_key, body, headers)
