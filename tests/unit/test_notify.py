"""The notification state machine, driven by hand: at most one send, one result per id."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

import pytest

from pipelines.delivery import (
    DeliveryError,
    PermanentDeliveryError,
    RateLimitedError,
    TransientDeliveryError,
)
from pipelines.stages import notify
from pipelines.stages.notify import DelayGate, Policy, Step

NOW = 1_000_000
POLICY = Policy(max_attempts=3, delays_s=(0.5, 1.0, 2.0), jitter=0.2)
SRC = ("notifications.sms", 1, 10)


def task(attempt: int = 1, channel: str = "SMS", **changes: Any) -> dict[str, Any]:
    return {
        "notification_id": f"O-1:order_confirmed:{channel}",
        "order_id": "O-1",
        "channel": channel,
        "recipient": "+15550001111",
        "template": "order_confirmed",
        "params": {"order_id": "O-1"},
        "attempt": attempt,
        "not_before": NOW - 5,
        "created_at": NOW - 100,
        "last_error": None,
        **changes,
    }


def arrive(
    t: dict[str, Any],
    state: dict[str, Any] | None = None,
    *,
    result: str | None = None,
    token: str | None = None,
    source: tuple[str, int, int] = SRC,
    busy: bool = False,
    now: int = NOW,
    policy: Policy = POLICY,
) -> Step:
    return notify.on_task(
        t,
        state=state,
        result=result,
        token=token,
        source=source,
        busy=busy,
        now_ms=now,
        policy=policy,
    )


def sending(t: dict[str, Any], source: tuple[str, int, int] = SRC, **kw: Any) -> dict[str, Any]:
    step = arrive(t, source=source, **kw)
    assert step.kind == "send"
    assert step.state is not None
    return step.state


def failed(t: dict[str, Any], error: DeliveryError, seed: int = 1, **kw: Any) -> Step:
    state = sending(t, **kw)
    return notify.on_failed(t, state, error, now_ms=NOW, policy=POLICY, rng=random.Random(seed))


# --- first attempt, duplicates, results ---------------------------------------------------


def test_a_first_task_is_sent_after_recording_the_attempt() -> None:
    step = arrive(task())
    assert step.kind == "send"
    assert step.task == task()
    assert step.state == {
        "attempt": 1,
        "phase": "sending",
        "by": list(SRC),
        "first_at": NOW,
        "last_at": NOW,
        "error": None,
        "redrive": None,
    }
    assert not step.clear_result


@pytest.mark.parametrize(
    ("kw", "note"),
    [
        ({"result": "DELIVERED"}, "already delivered"),
        ({"result": "DEAD_LETTERED"}, "already dead-lettered"),
        ({"busy": True}, "being processed in this worker"),
    ],
)
def test_tasks_with_a_result_or_in_progress_here_are_skipped(kw: dict[str, Any], note: str) -> None:
    step = arrive(task(), **kw)
    assert (step.kind, step.note) == ("skip", note)


def test_a_delivery_is_the_one_delivered_result() -> None:
    state = sending(task())
    step = notify.on_sent(task(), state, "sms-000001", NOW + 40)
    assert step.kind == "deliver"
    assert step.result == {
        "notification_id": "O-1:order_confirmed:SMS",
        "order_id": "O-1",
        "channel": "SMS",
        "status": "DELIVERED",
        "attempts": 1,
        "error": None,
        "provider_message_id": "sms-000001",
        "requested_at": NOW - 100,
        "completed_at": NOW + 40,
    }


def test_an_early_task_is_deferred_not_sent() -> None:
    step = arrive(task(not_before=NOW + 4_000))
    assert step.kind == "defer"
    assert step.delay_topic == "notifications.retry.10s"
    assert step.state is None


# --- retries and backoff ------------------------------------------------------------------


def test_a_transient_failure_queues_the_next_attempt_with_backoff() -> None:
    step = failed(task(), TransientDeliveryError("http 500", "boom"))
    assert step.kind == "retry"
    assert step.task is not None
    assert step.state is not None
    assert step.task["attempt"] == 2
    assert step.task["last_error"] == "http 500: boom"
    assert NOW + 400 <= step.task["not_before"] <= NOW + 600  # 0.5 s +- 20 %
    assert step.delay_topic == "notifications.retry.1s"
    assert step.state["phase"] == "failed"
    assert step.state["retry"] == {"not_before": step.task["not_before"], "topic": step.delay_topic}


def test_later_attempts_walk_the_ladder() -> None:
    state = {**sending(task()), "attempt": 2}
    step = notify.on_failed(
        task(2), state, TransientDeliveryError("http 503"), now_ms=NOW, policy=POLICY,
        rng=random.Random(3),
    )  # fmt: skip
    assert step.task is not None
    assert step.task["attempt"] == 3
    assert NOW + 800 <= step.task["not_before"] <= NOW + 1200  # 1 s +- 20 %


def test_retry_after_is_honoured_and_picks_a_longer_delay_topic() -> None:
    step = failed(task(), RateLimitedError("http 429", "slow down", retry_after_s=30))
    assert step.kind == "retry"
    assert step.task is not None
    assert step.task["not_before"] >= NOW + 30_000
    assert step.delay_topic == "notifications.retry.60s"


def test_a_retry_after_beyond_the_cap_is_cut_to_it() -> None:
    year = 365 * 86_400.0
    step = failed(task(), RateLimitedError("http 429", "slow down", retry_after_s=year))
    assert step.task is not None
    cap_ms = int(POLICY.max_retry_after_s * 1000)
    assert NOW + cap_ms <= step.task["not_before"] <= NOW + POLICY.max_hold_ms


@pytest.mark.parametrize("state", [None, "sending"])
def test_a_task_due_years_ahead_is_dead_lettered_not_parked(state: str | None) -> None:
    """Deferred, it would hold its delay partition (and every retry behind it) for years."""
    far = task(2, not_before=NOW + 10 * 365 * 86_400_000)
    step = notify.on_task(
        far,
        state=sending(task(2)) if state else None,
        result=None,
        token=None,
        source=("notifications.retry.60s", 0, 9),
        busy=False,
        now_ms=NOW,
        policy=POLICY,
    )
    assert step.kind == "dead"
    assert step.result is not None
    assert step.result["status"] == "DEAD_LETTERED"
    assert "not a retry this stage scheduled" in (step.error or "")
    assert step.state is not None
    assert step.state["phase"] == "dead"


def test_a_task_due_within_the_longest_wait_is_deferred() -> None:
    due = task(2, not_before=NOW + POLICY.max_hold_ms - 1)
    step = notify.on_task(
        due, state=None, result=None, token=None, source=("notifications.retry.60s", 0, 9),
        busy=False, now_ms=NOW, policy=POLICY,
    )  # fmt: skip
    assert step.kind == "defer"


@pytest.mark.parametrize(
    "error",
    [
        PermanentDeliveryError("http 400", "recipient refused"),
        PermanentDeliveryError("smtp 550", "no such user"),
        PermanentDeliveryError("unknown template"),
    ],
)
def test_permanent_errors_skip_retries(error: DeliveryError) -> None:
    step = failed(task(), error)
    assert step.kind == "dead"
    assert step.result is not None
    assert step.result["status"] == "DEAD_LETTERED"
    assert step.result["attempts"] == 1
    assert step.result["error"] == str(error)
    assert step.state is not None
    assert step.state["phase"] == "dead"


def test_the_last_attempt_failing_dead_letters_with_the_reason() -> None:
    previous = {**sending(task(2)), "phase": "failed", "attempt": 2}
    state = sending(task(3), state=previous)
    step = notify.on_failed(
        task(3), state, TransientDeliveryError("smtp 451", "try later"), now_ms=NOW, policy=POLICY
    )
    assert step.kind == "dead"
    assert step.error == "smtp 451: try later (gave up after 3 attempts)"
    assert step.result is not None
    assert step.result["attempts"] == 3


def test_a_timeout_is_an_unknown_outcome_and_not_resent() -> None:
    step = failed(task(), TransientDeliveryError("http timeout", "5 s"))
    assert step.kind == "dead"
    assert step.error == "outcome unknown after http timeout: 5 s; not resent"


def test_a_timeout_is_retried_when_the_http_provider_is_idempotent() -> None:
    idempotent = Policy(max_attempts=3, delays_s=(0.5,), jitter=0.0, provider_idempotent=True)
    state = sending(task())
    step = notify.on_failed(
        task(), state, TransientDeliveryError("http timeout"), now_ms=NOW, policy=idempotent
    )
    assert step.kind == "retry"
    email = sending(task(channel="EMAIL"))
    step = notify.on_failed(
        task(channel="EMAIL"), email, TransientDeliveryError("smtp timeout"), now_ms=NOW,
        policy=idempotent,
    )  # fmt: skip
    assert step.kind == "dead"  # SMTP has no idempotency key


# --- redelivery, stale and duplicate attempts ---------------------------------------------


def test_stale_and_duplicate_attempts_are_skipped() -> None:
    retry = failed(task(), TransientDeliveryError("http 500"))
    assert retry.state is not None
    other = ("notifications.sms", 1, 99)
    assert arrive(task(1), retry.state, source=other).note == "duplicate of a failed attempt"
    current = sending(task(2), state=retry.state)
    assert arrive(task(1), current).note == "stale attempt"


def test_a_redelivered_failed_attempt_re_emits_the_same_retry() -> None:
    retry = failed(task(), TransientDeliveryError("http 500"))
    assert retry.state is not None
    again = arrive(task(1), retry.state)  # same source record: the crash may have lost it
    assert again.kind == "retry"
    assert again.task == retry.task
    assert again.delay_topic == retry.delay_topic


def test_a_retry_of_the_next_attempt_is_sent() -> None:
    retry = failed(task(), TransientDeliveryError("http 500"))
    assert retry.state is not None
    assert retry.task is not None
    due = retry.task["not_before"]
    early = arrive(retry.task, retry.state, source=("notifications.sms", 1, 50), now=due - 1)
    assert early.kind == "defer"
    step = arrive(retry.task, retry.state, source=("notifications.sms", 1, 50), now=due)
    assert step.kind == "send"
    assert step.state is not None
    assert step.state["attempt"] == 2
    assert step.state["first_at"] == NOW
    assert step.state["error"] == "http 500"


@pytest.mark.parametrize("channel", ["EMAIL", "SMS", "PUSH"])
def test_an_attempt_in_flight_at_a_crash_is_not_sent_again(channel: str) -> None:
    state = sending(task(channel=channel))
    step = arrive(task(channel=channel), state)  # the same record, redelivered after a crash
    assert step.kind == "dead"
    assert step.error == notify.UNKNOWN_AFTER_CRASH
    assert step.result is not None
    assert step.result["status"] == "DEAD_LETTERED"
    assert step.task == task(channel=channel)  # the task itself goes to the DLQ


def test_an_idempotent_http_provider_may_get_the_crashed_attempt_again() -> None:
    idempotent = Policy(provider_idempotent=True)
    state = sending(task())
    assert arrive(task(), state, policy=idempotent).kind == "send"
    email = sending(task(channel="EMAIL"))
    assert arrive(task(channel="EMAIL"), email, policy=idempotent).kind == "dead"


def test_a_dead_letter_whose_result_was_lost_is_re_emitted_once() -> None:
    dead = failed(task(), PermanentDeliveryError("http 400"))
    assert dead.state is not None
    again = arrive(task(), dead.state)
    assert again.kind == "dead"
    assert again.result is not None
    assert dead.result is not None
    assert again.result["error"] == dead.result["error"]
    assert arrive(task(), dead.state, result="DEAD_LETTERED").kind == "skip"


# --- redrive generations ------------------------------------------------------------------


def test_a_redrive_opens_a_new_generation_with_a_fresh_budget() -> None:
    dead = failed(task(), PermanentDeliveryError("http 400"))
    assert dead.state is not None
    step = arrive(task(1), dead.state, result="DEAD_LETTERED", token="dlq:0:7")
    assert step.kind == "send"
    assert step.clear_result
    assert step.state is not None
    assert step.state["redrive"] == "dlq:0:7"
    assert step.state["attempt"] == 1
    assert step.state["first_at"] == NOW


def test_a_redrive_without_state_still_retracts_the_old_result() -> None:
    step = arrive(task(), None, result="DEAD_LETTERED", token="dlq:0:7")
    assert (step.kind, step.clear_result) == ("send", True)


def test_the_same_redrive_twice_and_old_generations_change_nothing() -> None:
    dead = failed(task(), PermanentDeliveryError("http 400"))
    assert dead.state is not None
    first = arrive(task(), dead.state, result="DEAD_LETTERED", token="dlq:0:7")
    assert first.state is not None
    retry = notify.on_failed(
        task(), first.state, TransientDeliveryError("http 500"), now_ms=NOW, policy=POLICY
    )
    assert retry.state is not None
    again = ("notifications.sms", 1, 77)
    assert arrive(task(), retry.state, token="dlq:0:7", source=again).kind == "skip"
    assert arrive(task(2), retry.state).note == "stale generation"  # a pre-redrive retry
    assert arrive(task(), retry.state, token="dlq:0:9").note == "generation still open"
    assert arrive(task(), retry.state, token="dlq:0:7", result="DELIVERED").kind == "skip"


def test_dead_letter_headers_say_why_how_often_and_when() -> None:
    state = {**sending(task(channel="EMAIL")), "attempt": 3, "last_at": NOW + 9}
    headers = dict(notify.dead_letter_headers(task(channel="EMAIL"), state))
    assert headers == {
        "sluice.notification_id": b"O-1:order_confirmed:EMAIL",
        "sluice.channel": b"EMAIL",
        "sluice.attempts": b"3",
        "sluice.first_attempt_at": str(NOW).encode(),
        "sluice.last_attempt_at": str(NOW + 9).encode(),
    }


# --- a whole life, with duplicates and crashes --------------------------------------------


def _simulate(seed: int) -> tuple[dict[str, Any] | None, int, list[str]]:
    """Run one id through random failures, duplicates and crashes; return what happened.

    Every record (first task, retries, duplicates) goes through `on_task`; a send fails
    at random; a crash right after a send loses the outcome (the state stays "sending")
    and the record is redelivered. Returns the result, the number of provider calls, and
    the steps taken.
    """
    rng = random.Random(seed)
    state: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    sends, kinds = 0, []
    queue = [(task(), ("notifications.sms", 0, 0))]
    offset, now = 1, NOW
    while queue and len(kinds) < 200:
        record, source = queue.pop(0)
        step = arrive(record, state, result=result and result["status"], source=source, now=now)
        kinds.append(step.kind)
        if step.kind == "send":
            state, sends = step.state, sends + 1
            assert state is not None
            if rng.random() < 0.15:  # crash after the provider call: redeliver, outcome lost
                queue.insert(0, (record, source))
                continue
            if rng.random() < 0.5:
                step = notify.on_failed(
                    record, state, TransientDeliveryError("http 500"), now_ms=now, policy=POLICY,
                    rng=rng,
                )  # fmt: skip
            else:
                step = notify.on_sent(record, state, "p-1", now)
        if step.kind in ("deliver", "dead"):
            assert result is None, "a second result"
            result, state = step.result, step.state if step.kind == "dead" else None
        elif step.kind == "retry":
            state = step.state or state
            assert step.task is not None
            now = max(now, step.task["not_before"])
            queue.append((step.task, ("notifications.sms", 0, offset)))
            offset += 1
        if rng.random() < 0.3:  # an upstream duplicate of the first task
            queue.append((task(), ("notifications.sms", 0, offset)))
            offset += 1
    return result, sends, kinds


@pytest.mark.parametrize("seed", range(40))
def test_any_mix_of_failures_duplicates_and_crashes_ends_in_one_result(seed: int) -> None:
    result, sends, kinds = _simulate(seed)
    assert result is not None, kinds
    assert sends <= POLICY.max_attempts
    assert result["attempts"] == sends or result["error"] == notify.UNKNOWN_AFTER_CRASH


# --- the delay relay's gate ---------------------------------------------------------------


def test_the_gate_releases_due_heads_and_holds_the_rest_in_order() -> None:
    gate: DelayGate[int, str] = DelayGate()
    gate.hold(0, 100, "a")
    gate.hold(0, 300, "b")
    gate.hold(0, 200, "c")  # due before b, but behind it: partition order is kept
    gate.hold(1, 150, "d")
    assert gate.next_due() == 100
    assert gate.release(99) == []
    assert gate.waiting() == {0, 1}
    assert gate.release(160) == [(0, "a"), (1, "d")]
    assert gate.waiting() == {0}
    assert gate.next_due() == 300
    assert gate.release(250) == []
    assert gate.release(300) == [(0, "b"), (0, "c")]
    assert gate.waiting() == set()
    assert gate.next_due() is None


def test_the_gate_forgets_revoked_partitions() -> None:
    gate: DelayGate[int, str] = DelayGate()
    gate.hold(0, 100, "a")
    gate.hold(1, 100, "b")
    gate.drop({0})
    assert len(gate) == 1
    assert gate.release(100) == [(1, "b")]


# --- the delay relay, against a fake consumer and producer --------------------------------


class FakeConsumer:
    """Just what the relay calls: fetch, pause/resume, assignment, commit."""

    def __init__(self, batches: list[dict[Any, list[Any]]], assignment: set[Any]) -> None:
        self.batches = batches
        self.assigned = assignment
        self.paused: set[Any] = set()
        self.committed: dict[Any, int] = {}
        self.timeouts: list[int] = []
        self.seeks: list[tuple[Any, int]] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        self.timeouts.append(timeout_ms)
        return self.batches.pop(0) if self.batches else {}

    def assignment(self) -> set[Any]:
        return self.assigned

    def pause(self, *partitions: Any) -> None:
        self.paused |= set(partitions)

    def resume(self, *partitions: Any) -> None:
        self.paused -= set(partitions)

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.committed.update(offsets)

    def seek(self, partition: Any, offset: int) -> None:
        self.seeks.append((partition, offset))


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, Any]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None):
        self.sent.append((topic, key, headers))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def test_the_relay_pauses_until_due_and_forwards_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka import TopicPartition

    from pipelines.runtime import relay as relay_module
    from pipelines.runtime.faustapp import StageMetrics
    from pipelines.serde import serde_for
    from pipelines.settings import Settings

    settings = Settings(topic_prefix="x.")
    serde = serde_for(settings)
    tp0, tp1 = (
        TopicPartition("x.notifications.retry.10s", 0),
        TopicPartition("x.notifications.retry.1s", 1),
    )

    def record(tp: Any, offset: int, value: bytes, headers: Any = ()) -> Any:
        return SimpleNamespace(
            topic=tp.topic, partition=tp.partition, offset=offset, key=b"k", value=value,
            headers=headers, timestamp=NOW,
        )  # fmt: skip

    def encoded(channel: str, not_before: int) -> bytes:
        value = task(2, channel=channel, not_before=not_before)
        return serde.encode("sluice.notifications.NotificationRequested", value)

    token = (("sluice.redrive", b"dlq:0:1"),)
    early, late = encoded("SMS", NOW - 1), encoded("SMS", NOW + 10_000)
    years_ahead = encoded("SMS", NOW + 10 * 365 * 86_400_000)
    first = {
        tp0: [record(tp0, 5, early), record(tp0, 6, late), record(tp0, 7, years_ahead)],
        tp1: [record(tp1, 7, encoded("PUSH", NOW), token), record(tp1, 8, b"junk")],
    }
    consumer = FakeConsumer([first], {tp0, tp1})
    producer = FakeProducer()
    relay = relay_module.DelayRelay(settings, serde, StageMetrics("notifications"))
    clock = [NOW]
    monkeypatch.setattr(relay_module, "now_ms", lambda: clock[0])

    async def cycles(*times: int) -> None:
        for at in times:
            clock[0] = at
            await relay.cycle(consumer, producer)

    asyncio.run(cycles(NOW))
    assert producer.sent == [
        ("x.notifications.sms", b"k", []),
        ("x.notifications.push", b"k", list(token)),  # the redrive token travels along
        ("x.notifications.dlq", b"k", producer.sent[2][2]),
    ]
    # the physical topic, prefix included: where the record really is
    assert dict(producer.sent[2][2])["sluice.source.topic"] == b"x.notifications.retry.1s"
    assert consumer.committed == {tp0: 6, tp1: 9}  # up to what was forwarded
    assert consumer.paused == {tp0}  # its head is not due
    asyncio.run(cycles(NOW + 9_999))
    assert len(producer.sent) == 3  # not a millisecond early
    assert consumer.timeouts[-1] == 1  # the poll wakes when the head falls due
    asyncio.run(cycles(NOW + 10_000))
    assert producer.sent[3] == ("x.notifications.sms", b"k", [])
    # due ten years ahead: not held (it would stop the partition); the stage refuses it
    assert producer.sent[4] == ("x.notifications.sms", b"k", [])
    assert consumer.committed[tp0] == 8
    assert consumer.paused == set()


def test_the_relay_waits_out_a_registry_outage_without_dead_letters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A delay record whose schema id the relay has not seen, while the registry is down:
    nothing is forwarded or dead-lettered, its partition is sought back to it, the relay
    keeps polling; once the registry answers the record is relayed as usual."""
    from aiokafka import TopicPartition

    from pipelines.runtime import relay as relay_module
    from pipelines.runtime.faustapp import StageMetrics
    from pipelines.runtime.schemagate import SchemaGate
    from pipelines.serde import ConfluentSerde
    from pipelines.settings import Settings
    from tests.support.registry import running_registry

    tp = TopicPartition("x.notifications.retry.1s", 0)
    with running_registry() as registry:
        value = ConfluentSerde(registry.url).encode(
            "sluice.notifications.NotificationRequested", task(3, not_before=NOW - 1), topic="r"
        )
        registry.stop()
        serde = ConfluentSerde(registry.url, client_retries=0)
        record = SimpleNamespace(
            topic=tp.topic, partition=0, offset=4, key=b"k", value=value, headers=(), timestamp=NOW
        )
        consumer = FakeConsumer([{tp: [record]}, {tp: [record]}], {tp})
        producer = FakeProducer()
        gate = SchemaGate(serde, [], first_delay_s=0.01)
        relay = relay_module.DelayRelay(Settings(topic_prefix="x."), serde, StageMetrics("n"), gate)
        monkeypatch.setattr(relay_module, "now_ms", lambda: NOW)
        asyncio.run(relay.cycle(consumer, producer))
        assert producer.sent == []  # neither relayed nor dead-lettered
        assert consumer.seeks == [(tp, 4)]  # fetched again once the registry answers
        assert consumer.committed == {}
        registry.start()
        asyncio.run(relay.cycle(consumer, producer))
    assert [topic for topic, _key, _headers in producer.sent] == ["x.notifications.sms"]
    assert consumer.committed == {tp: 5}


def test_a_stage_error_on_a_recorded_attempt_ends_the_id_dead() -> None:
    state = sending(task())
    step = notify.abandoned(task(), state, "stage error: KafkaError: boom", NOW + 5)
    assert step.kind == "dead"
    assert step.result is not None
    assert step.result["error"] == "stage error: KafkaError: boom"
    assert step.result["completed_at"] == NOW + 5
