"""One dead-letter writer: the record as it came (null stays null), one header format."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from pipelines.errors import RecordRef
from pipelines.runtime.deadletter import REDRIVE_HEADER, DeadLetters, redriven_for_another


def _writer() -> tuple[DeadLetters, list[tuple[Any, ...]], Counter]:
    sent: list[tuple[Any, ...]] = []

    async def send(topic: str, key: Any, value: Any, headers: list[tuple[str, bytes]]) -> str:
        sent.append((topic, key, value, dict(headers)))
        return "future"

    counter = Counter("dl", "dead letters", ["stage", "reason"], registry=CollectorRegistry())
    return DeadLetters("orders", "p1.orders.dlq", send, counter), sent, counter


def test_the_letter_names_the_physical_source_and_keeps_a_null_value_null() -> None:
    writer, sent, counter = _writer()
    ref = RecordRef("p1.orders.placed", 2, 41, b"k", None)
    assert asyncio.run(writer.write(ref, "record too short (0 bytes)")) == "future"
    topic, key, value, headers = sent[0]
    assert (topic, key, value) == ("p1.orders.dlq", b"k", None)
    assert headers["sluice.source.topic"] == b"p1.orders.placed"
    assert (headers["sluice.source.partition"], headers["sluice.source.offset"]) == (b"2", b"41")
    assert headers["sluice.error"] == b"record too short (0 bytes)"
    assert headers["sluice.stage"] == b"orders"
    assert int(headers["sluice.failed_at"]) > 0
    assert counter.labels("orders", "record too short (0 bytes)")._value.get() == 1


def test_a_stage_may_put_another_value_key_and_extra_headers_in_the_letter() -> None:
    writer, sent, _ = _writer()
    ref = RecordRef("p1.notifications.sms", 0, 1, None, b"first task")
    asyncio.run(
        writer.write(ref, "x" * 5000, key=b"n-1", value=b"last task", extra_headers=[("a", b"1")])
    )
    _topic, key, value, headers = sent[0]
    assert (key, value, headers["a"]) == (b"n-1", b"last task", b"1")
    assert len(headers["sluice.error"]) == 1000  # bounded


@pytest.mark.parametrize(
    ("headers", "dlq", "skip"),
    [
        (None, "orders.dlq", False),
        ({}, "orders.dlq", False),
        ({"sluice.intake.fingerprint": b"x"}, "orders.dlq", False),
        ({REDRIVE_HEADER: b"orders.dlq:1:17"}, "orders.dlq", False),  # ours: take it
        ({REDRIVE_HEADER: b"analytics.dlq:0:3"}, "orders.dlq", True),  # analytics' letter
        ({REDRIVE_HEADER: b"orders.dlq:1:17"}, "analytics.dlq", True),  # counted already
        ({REDRIVE_HEADER: "analytics.dlq:0:3"}, "analytics.dlq", False),
    ],
)
def test_a_redriven_letter_reaches_only_the_stage_whose_dlq_it_left(
    headers: dict[str, object] | None, dlq: str, skip: bool
) -> None:
    assert redriven_for_another(headers, dlq) is skip
