"""EventSender.warm (a new producer connects before its first record is stamped) and
require_topics (a topic created a moment ago is waited for, a missing one is one error)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipelines.errors import TopicError
from pipelines.settings import Settings
from producers import sender
from producers.sender import EventSender


class Metadata:
    """A producer that answers metadata requests and, on each poll, reports the next of
    `states` through the sender's statistics callback (as librdkafka's would)."""

    def __init__(
        self, error: KafkaError | None = None, on_stats: Any = None, states: tuple[str, ...] = ()
    ) -> None:
        self.error, self.polls = error, 0
        self.calls: list[tuple[str | None, float]] = []
        self.on_stats, self.states = on_stats, list(states)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        self.calls.append((topic, timeout))
        if self.error is not None:
            raise KafkaException(self.error)
        return None

    def poll(self, timeout: float) -> int:
        self.polls += 1
        if self.states and self.on_stats is not None:
            state = self.states.pop(0)
            self.on_stats(json.dumps({"name": "p", "eos": {"idemp_state": state}}))
        else:
            time.sleep(timeout)
        return 0


def test_warm_asks_for_the_topics_metadata_once_and_waits_for_the_producer_id() -> None:
    sender = EventSender(Settings(bootstrap_servers="127.0.0.1:1"))
    states = ("WaitTransport", "RequestPID", "Assigned", "Assigned")
    fake = Metadata(on_stats=sender._statistics, states=states)
    sender.producer = fake  # type: ignore[assignment]
    sender.warm("t.orders.placed", 3.0)
    assert fake.calls == [("t.orders.placed", 3.0)]
    assert fake.polls == 3  # returned once the id was assigned
    assert sender.has_producer_id


def test_warm_does_not_wait_for_an_id_a_producer_without_idempotence_never_gets() -> None:
    sender = EventSender(Settings(bootstrap_servers="127.0.0.1:1"), **{"enable.idempotence": False})
    fake = Metadata(on_stats=sender._statistics, states=("Init",))
    sender.producer = fake  # type: ignore[assignment]
    sender.warm("t.orders.placed", 3.0)
    assert fake.polls == 0


def test_warm_leaves_an_unreachable_broker_to_the_sends() -> None:
    sender = EventSender(Settings(bootstrap_servers="127.0.0.1:1"))
    fake = Metadata(KafkaError(KafkaError._TRANSPORT))
    sender.producer = fake  # type: ignore[assignment]
    started = time.monotonic()
    sender.warm("t.orders.placed", 0.1)  # no exception: the first send reports it
    assert len(fake.calls) == 1
    assert time.monotonic() - started < 1.0  # and the wait for an id ends with the timeout


def test_a_topic_still_on_its_way_to_every_broker_is_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = iter([{}, {}, {"t.orders.placed": object()}])
    monkeypatch.setattr(sender.admin, "list_topics", lambda _s: next(answers))
    monkeypatch.setattr(sender.time, "sleep", lambda _s: None)
    sender.require_topics(Settings(topic_prefix="t."), "orders.placed")  # third look finds it


def test_a_topic_that_does_not_come_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    looks = []
    monkeypatch.setattr(sender.admin, "list_topics", lambda _s: looks.append(1) or {})
    monkeypatch.setattr(sender.admin, "unauthorized_topics", lambda _s, _t: [])
    monkeypatch.setattr(sender, "CREATED_LAG_S", 0.0)
    with pytest.raises(TopicError, match=r"unknown topic t\.orders\.placed .*sluice topics create"):
        sender.require_topics(Settings(topic_prefix="t."), "orders.placed")
    assert len(looks) == 1
