"""The worker's start-up look at the cluster waits out faults that pass (a topic created
a moment ago has no leader yet) and fails in one line on those that do not."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipelines import admin
from pipelines.errors import SluiceError
from pipelines.runtime import startup
from pipelines.settings import Settings


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future


def _failed(code: int) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(KafkaException(KafkaError(code)))
    return future


class Admin:
    """An admin client whose offset listing fails `failures` times with `code`."""

    def __init__(self, code: int, failures: int) -> None:
        self.code, self.failures, self.calls = code, failures, 0

    def describe_cluster(self, **_: Any) -> Future[Any]:
        return _done(SimpleNamespace(cluster_id="c-1"))

    def describe_topics(self, collection: Any, **_: Any) -> dict[str, Future[Any]]:
        description = SimpleNamespace(topic_id="id-1", partitions=[0, 1])
        return {name: _done(description) for name in collection.topic_names}

    def list_offsets(self, request: dict[Any, Any], **_: Any) -> dict[Any, Future[Any]]:
        self.calls += 1
        if self.calls <= self.failures:
            return {tp: _failed(self.code) for tp in request}
        return {tp: _done(SimpleNamespace(offset=7)) for tp in request}


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, int], Admin]:
    monkeypatch.setattr(startup.time, "sleep", lambda _s: None)

    def make(code: int, failures: int) -> Admin:
        fake = Admin(code, failures)
        monkeypatch.setattr(admin, "admin_client", lambda _settings: fake)
        return fake

    return make


def test_a_changelog_without_a_leader_yet_is_asked_again(client: Any) -> None:
    fake = client(KafkaError.NOT_LEADER_FOR_PARTITION, 3)
    state = startup.cluster_state(Settings(), ["t.changelog"])
    assert fake.calls == 4
    assert state.identity.cluster_id == "c-1"
    assert state.end_offsets == {("t.changelog", 0): 7, ("t.changelog", 1): 7}


def test_a_fault_that_does_not_pass_is_one_line_at_once(client: Any) -> None:
    fake = client(KafkaError.TOPIC_AUTHORIZATION_FAILED, 1)
    with pytest.raises(SluiceError, match="could not describe the changelog topics at "):
        startup.cluster_state(Settings(), ["t.changelog"])
    assert fake.calls == 1


def test_a_fault_that_outlasts_the_wait_fails(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(startup, "PASSING_WAIT_S", 0.0)
    client(KafkaError.LEADER_NOT_AVAILABLE, 99)
    with pytest.raises(SluiceError, match="Leader not available"):
        startup.cluster_state(Settings(), ["t.changelog"])


@pytest.mark.parametrize(
    ("code", "passes"),
    [
        (KafkaError.NOT_LEADER_FOR_PARTITION, True),
        (KafkaError.LEADER_NOT_AVAILABLE, True),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, True),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, False),
        (KafkaError.INVALID_CONFIG, False),
    ],
)
def test_which_kafka_errors_pass(code: int, passes: bool) -> None:
    assert admin.passing(KafkaError(code)) is passes
    assert admin.passing(KafkaError(code, retriable=True)) is True
    assert admin.passing(ValueError("not a Kafka error")) is False
