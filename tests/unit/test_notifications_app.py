"""The notifications stage's wiring, in process: real encoded tasks through its channel
agents (`agent.test_context()`, no broker, fake providers injected), and two apps built
side by side sharing nothing.

What the stage sends is recorded at the app's producer (`tests.support.stageapp`); the
table records it awaits (an attempt before its send, the result) are delivered at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from faust.events import Event
from faust.types import TP

from pipelines.delivery import DeliveryError, DeliverySettings, Sender, TransientDeliveryError
from pipelines.notifications import RESULT, NotificationsStage, SenderPool, create_app
from pipelines.settings import NotificationSettings, Settings
from pipelines.stages.homing import home_partition
from pipelines.topology import CHANNEL_TOPICS
from tests.support import stageapp
from tests.support.stageapp import RecordingProducer

NOW = int(time.time() * 1000)
REQUESTED = "sluice.notifications.NotificationRequested"
ATTEMPTS = "t.sluice-notifications-attempts-changelog"


class FakeProvider:
    """A provider of one channel: answers with a message id, or fails as told."""

    def __init__(self, channel: str, failure: DeliveryError | None = None) -> None:
        self.channel, self.failure = channel, failure
        self.sent: list[str] = []

    async def send(self, notification: Mapping[str, Any]) -> str:
        self.sent.append(notification["notification_id"])
        if self.failure is not None:
            raise self.failure
        return f"msg-{len(self.sent)}"

    async def close(self) -> None:
        pass


Providers = dict[str, FakeProvider]


def _providers(failure: DeliveryError | None = None) -> Providers:
    return {ch: FakeProvider(ch, failure) for ch in ("EMAIL", "SMS", "PUSH")}


def _settings(tmp_path: Path, prefix: str = "t.") -> Settings:
    return Settings(
        data_dir=tmp_path / prefix,
        topic_prefix=prefix,
        store="memory://",
        notifications=NotificationSettings(concurrency=2, jitter=0.0),
    )


def _stage(tmp_path: Path, providers: Providers) -> NotificationsStage:
    """A stage whose senders are `providers` (one per channel, as `senders_for` makes)."""

    def make(_delivery: DeliverySettings) -> Mapping[str, Sender]:
        return providers

    settings = _settings(tmp_path)
    stage = NotificationsStage(settings, SenderPool(settings.delivery, 1, make))
    stage.install()
    stage.reshare(  # the whole group's rate: as if this worker had every partition
        {TP(settings.topic(t), p) for t in CHANNEL_TOPICS.values() for p in range(6)}
    )
    return stage


@pytest.fixture
def providers() -> Providers:
    return _providers()


@pytest.fixture
def stage(tmp_path: Path, providers: Providers) -> NotificationsStage:
    return _stage(tmp_path, providers)


@pytest.fixture
def out(stage: NotificationsStage) -> RecordingProducer:
    return stageapp.record_sends(stage.app)


def _task(notification_id: str) -> dict[str, Any]:
    return {
        "notification_id": notification_id,
        "order_id": "O-1",
        "channel": "SMS",
        "recipient": "+4915100000001",
        "template": "order_confirmed",
        "params": {"total": "7.50 EUR"},
        "attempt": 1,
        "not_before": NOW - 1000,
        "created_at": NOW - 1000,
        "last_error": None,
    }


def _sms(stage: NotificationsStage, notification_id: str, offset: int, key: bytes) -> Event:
    """A task as the order stage writes it: keyed by its id, in that id's partition."""
    value = stage.serde.encode(REQUESTED, _task(notification_id))
    partition = home_partition(notification_id.encode(), stage.settings.partitions)
    topic = stage.settings.topic("notifications.sms")
    return stageapp.event(stage.app, topic, partition, offset, value, NOW, key=key)


def _deliver(stage: NotificationsStage, events: list[Event], done: Callable[[], bool]) -> None:
    stageapp.drive(stage.app.agents["notifications.deliver_sms"], events, done, "tasks handled")


def test_a_task_is_delivered_once_and_its_result_published(
    stage: NotificationsStage, out: RecordingProducer, providers: Providers
) -> None:
    results = stage.settings.topic("notifications.results")
    task = _sms(stage, "N-1", 3, b"N-1")
    _deliver(stage, [task], lambda: bool(out.on(results)))
    [result] = out.on(results)  # the results table's changelog is the results topic
    assert result.key == b"N-1"
    decoded = stage.serde.decode(result.value or b"", RESULT)
    assert (decoded["status"], decoded["provider_message_id"]) == ("DELIVERED", "msg-1")
    attempt, tombstone = out.on(ATTEMPTS)  # recorded before the send; forgotten after
    assert attempt.key == tombstone.key == b"N-1"
    assert attempt.value is not None
    assert tombstone.value is None
    assert out.sent.index(attempt) < out.sent.index(result) < out.sent.index(tombstone)

    received = {"stage": "notifications", "topic": "notifications.sms"}

    def both_handled() -> bool:
        taken = stage.metrics.registry.get_sample_value("sluice_events_in_total", received)
        return taken == 3 and len(out.on(results)) == 2

    # N-1 redelivered (after a crash, say), then a new task: N-1's result stands
    _deliver(stage, [task, _sms(stage, "N-2", 4, b"N-2")], both_handled)
    assert providers["SMS"].sent == ["N-1", "N-2"]  # N-1 handed over once
    sent = {"stage": "notifications", "topic": "notifications.results"}
    assert stage.metrics.registry.get_sample_value("sluice_events_out_total", sent) == 2


def test_a_failed_send_goes_to_a_delay_topic(tmp_path: Path) -> None:
    stage = _stage(tmp_path, _providers(TransientDeliveryError("http 503", "unavailable")))
    out = stageapp.record_sends(stage.app)
    retry = stage.settings.topic("notifications.retry.1s")
    _deliver(stage, [_sms(stage, "N-3", 0, b"N-3")], lambda: bool(out.on(retry)))
    [queued] = out.on(retry)
    again = stage.serde.decode(queued.value or b"", REQUESTED)
    assert (queued.key, again["attempt"], again["last_error"]) == (
        b"N-3",
        2,
        "http 503: unavailable",
    )
    assert stage.attempts.data[b"N-3"]["phase"] == "failed"
    assert out.on(stage.settings.topic("notifications.results")) == []


def test_a_stray_task_is_rehomed_and_a_bad_record_dead_lettered(
    stage: NotificationsStage, out: RecordingProducer, providers: Providers
) -> None:
    sms, dlq = stage.settings.topic("notifications.sms"), stage.settings.topic("notifications.dlq")
    stray = _sms(stage, "N-4", 5, b"someone-else")
    garbage = stageapp.event(stage.app, sms, 0, 6, b"\x00garbage", NOW)
    _deliver(stage, [stray, garbage], lambda: bool(out.on(dlq)))
    [rehomed] = out.on(sms)
    assert rehomed.key == b"N-4"
    assert rehomed.value == stray.message.value
    assert rehomed.headers["sluice.rekeyed.from"].endswith(b"@5")
    [letter] = out.on(dlq)
    assert letter.value == b"\x00garbage"
    assert letter.headers["sluice.stage"] == b"notifications"
    assert providers["SMS"].sent == []  # neither was sent


def test_two_apps_from_two_settings_share_nothing(tmp_path: Path) -> None:
    parts = ("attempts", "results", "metrics", "delivery_metrics", "senders", "limits")
    one, two = stageapp.built_apart(
        lambda prefix: create_app(_settings(tmp_path, prefix)),
        "notifications.deliver_sms",
        (*parts, "busy", "relay", "ledger", "dead_letters", "schema_gate"),
    )
    assert isinstance(one, NotificationsStage)
    assert one.app.conf.id == "a.sluice-notifications"
    assert (
        len(stageapp.app_topics(one.app)) == 5
    )  # three channels, two changelogs (one the results)
    assert one.relay.settings.topic_prefix == "a."
    one.reshare({TP("a.notifications.sms", 0)})
    assert one.limits["SMS"].rate > 0
    assert two.limits["SMS"].rate == 0
