"""EventSender.warm: a new producer connects before its first record is stamped."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException

from pipelines.settings import Settings
from producers.sender import EventSender


class Metadata:
    def __init__(self, error: KafkaError | None = None) -> None:
        self.error, self.calls = error, []

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        self.calls.append((topic, timeout))
        if self.error is not None:
            raise KafkaException(self.error)
        return None


def test_warm_asks_for_the_topics_metadata_once() -> None:
    sender = EventSender(Settings(bootstrap_servers="127.0.0.1:1"))
    fake = Metadata()
    sender.producer = fake  # type: ignore[assignment]
    sender.warm("t.orders.placed", 3.0)
    assert fake.calls == [("t.orders.placed", 3.0)]


def test_warm_leaves_an_unreachable_broker_to_the_sends() -> None:
    sender = EventSender(Settings(bootstrap_servers="127.0.0.1:1"))
    fake = Metadata(KafkaError(KafkaError._TRANSPORT))
    sender.producer = fake  # type: ignore[assignment]
    sender.warm("t.orders.placed", 0.1)  # no exception: the first send reports it
    assert len(fake.calls) == 1
