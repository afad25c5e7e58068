"""The notifications stage on a real broker, with real SMTP and HTTP providers on loopback.

Each test runs `sluice worker notifications` processes against its own copy of the
topics and local providers with failures injected, then checks the invariants from the
outside: the results topic, the delay and DLQ topics, and what the providers received.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from consumers.tail import StartAt, read
from pipelines.cli import run as sluice
from pipelines.delivery import DeliverySettings, HttpSettings, SmtpSettings
from pipelines.providers import (
    HttpProviderConfig,
    ProvidersConfig,
    ProvidersHandle,
    SmtpProviderConfig,
    providers_in_thread,
)
from pipelines.runner import Fleet
from pipelines.serde import serde_for
from pipelines.settings import NotificationSettings, Settings
from pipelines.stages.homing import home_partition
from pipelines.stages.notify import UNKNOWN_AFTER_CRASH
from pipelines.topology import CHANNEL_TOPICS, DELAY_TOPICS
from tests.support import pipeline

REQUESTED = "sluice.notifications.NotificationRequested"
CHANNELS = tuple(CHANNEL_TOPICS)
RETRY_TOPICS = DELAY_TOPICS
FAST = NotificationSettings(retry_delays_s=(0.5, 1.0, 2.0), max_attempts=4, concurrency=4)


def _recipient(channel: str, i: int, bad: bool = False) -> str:
    if channel == "EMAIL":
        return f"{'blocked' if bad else 'c'}{i}@example.com"
    if channel == "SMS":
        return f"+1555{'999' if bad else '000'}{i:04d}"
    return f"device-{'bad' if bad else 'ok'}-{i:08x}"


def _task(i: int, channel: str, *, bad: bool = False) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "notification_id": f"O-{i}:order_confirmed:{channel}",
        "order_id": f"O-{i}",
        "channel": channel,
        "recipient": _recipient(channel, i, bad),
        "template": "order_confirmed",
        "params": {"order_id": f"O-{i}", "customer_id": "C-1", "total": "9.99 EUR"},
        "attempt": 1,
        "not_before": now,
        "created_at": now,
        "last_error": None,
    }


def _produce(settings: Settings, tasks: list[dict[str, Any]], *, duplicate_every: int = 0) -> None:
    """Write tasks to their channel topics (every Nth twice, like an at-least-once upstream)."""
    serde = serde_for(settings)
    producer = Producer(settings.confluent_producer())
    for n, task in enumerate(tasks):
        topic = settings.topic(f"notifications.{task['channel'].lower()}")
        value = serde.encode(REQUESTED, task, topic=topic)
        for _ in range(2 if duplicate_every and n % duplicate_every == 0 else 1):
            producer.produce(topic, value, task["notification_id"].encode())
    assert producer.flush(20) == 0


def _produce_to(
    settings: Settings, topic: str, tasks: list[tuple[dict[str, Any], bytes | None]]
) -> None:
    """Write tasks to one catalog topic, in order, each with the key given (None: no key,
    as a console producer writes; the partition then is the producer's choice)."""
    serde = serde_for(settings)
    producer = Producer(settings.confluent_producer())
    physical = settings.topic(topic)
    for task, key in tasks:
        producer.produce(physical, serde.encode(REQUESTED, task, topic=physical), key)
    assert producer.flush(20) == 0


def _behind(first: dict[str, Any], partitions: int) -> dict[str, Any]:
    """A due PUSH task whose id's partition is `first`'s: it queues behind it."""
    home = home_partition(first["notification_id"].encode(), partitions)
    return next(
        t
        for t in (_task(i, "PUSH") for i in range(91, 200))
        if home_partition(t["notification_id"].encode(), partitions) == home
    )


def _rows(settings: Settings, topic: str) -> list[dict[str, Any]]:
    return list(read(settings, topic, StartAt("beginning")))


def _results(settings: Settings) -> dict[str, list[dict[str, Any] | None]]:
    """Every record on notifications.results per id, in order (None for a tombstone)."""
    found: dict[str, list[dict[str, Any] | None]] = defaultdict(list)
    for row in sorted(_rows(settings, "notifications.results"), key=lambda r: r["offset"]):
        assert "error" not in row, row
        found[row["key"]].append(row["value"])
    return found


def _wait_results(
    settings: Settings, ids: set[str], fleet: Fleet, timeout: float = 90, status: str | None = None
) -> dict[str, list[dict[str, Any] | None]]:
    """Poll until every id's latest result exists (and has `status`, if given)."""
    deadline = time.monotonic() + timeout
    found: dict[str, list[dict[str, Any] | None]] = {}
    while time.monotonic() < deadline:
        found = _results(settings)
        latest = {k: v[-1] for k, v in found.items() if v and v[-1] is not None}
        if all(i in latest and (status is None or latest[i]["status"] == status) for i in ids):
            return found
        time.sleep(1.0)
    tails = "\n".join(f"--- {w.name}\n{w.output()[-3000:]}" for w in fleet.workers)
    missing = sorted(i for i in ids if not found.get(i) or found[i][-1] is None)
    raise AssertionError(f"{len(missing)} ids without a result, e.g. {missing[:5]}\n{tails}")


@contextmanager
def _running(settings: Settings, tmp_path: Path, workers: int = 1) -> Iterator[Fleet]:
    """Notification workers, ready (partitions assigned, no rebalance) before the test goes on."""
    with pipeline.workers(settings, tmp_path / "logs") as fleet:
        started = [fleet.start("notifications") for _ in range(workers)]
        for worker in started:
            worker.wait_ready()
        if workers > 1:
            time.sleep(1.0)
            for worker in started:  # the first was ready alone; wait for the group to settle
                worker.wait_ready()
        yield fleet


def _with(settings: Settings, handle: ProvidersHandle, **notifications: Any) -> Settings:
    """Settings that deliver to `handle`'s providers, with fast retries (and `notifications`)."""
    return settings.model_copy(
        update={
            "notifications": FAST.model_copy(update=notifications),
            "delivery": handle.delivery_settings(http_timeout_s=1.0),
        }
    )


@pytest.mark.slow
def test_every_request_ends_once_through_failures_timeouts_and_rate_limits(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    config = ProvidersConfig(
        smtp_port=0,
        http_port=0,
        seed=11,
        smtp=SmtpProviderConfig(failure_rate=0.3, reject_recipients=re.compile("^blocked")),
        http=HttpProviderConfig(
            failure_rate=0.3,
            timeout_rate=0.05,
            timeout_hold_s=3,
            rate_limit_every=9,
            retry_after_s=2,
            bad_request_recipients=re.compile(r"^\+1555999|^device-bad"),
        ),
    )
    tasks = [_task(i, ch, bad=i % 10 == 9) for i in range(30) for ch in CHANNELS]
    # due in ten years, hand-written onto a delay topic, with a due retry behind it
    parked = {**_task(90, "PUSH"), "not_before": int(time.time() * 1000) + 10 * 365 * 86_400_000}
    behind = _behind(parked, pipeline_settings.partitions)
    # as a console producer would write them: keyless, and keyed by something else
    strays = [(_task(95, "SMS"), None), (_task(96, "EMAIL"), b"not-its-id")]
    extra = [parked, behind, *(t for t, _k in strays)]
    ids = {t["notification_id"] for t in (*tasks, *extra)}
    with providers_in_thread(config) as handle:
        settings = _with(pipeline_settings, handle)
        with _running(settings, tmp_path) as fleet:
            delayed = (parked, behind)
            _produce_to(
                settings,
                "notifications.retry.60s",
                [(t, t["notification_id"].encode()) for t in delayed],
            )
            for task, key in strays:
                _produce_to(settings, "notifications." + task["channel"].lower(), [(task, key)])
            _produce(settings, tasks, duplicate_every=4)
            producer = Producer(settings.confluent_producer())
            for channel in CHANNELS:  # one undecodable record per channel topic
                topic = settings.topic(f"notifications.{channel.lower()}")
                producer.produce(topic, b"\x00garbage", b"poison")
            producer.flush(10)
            found = _wait_results(settings, ids, fleet, timeout=100)
            worker = fleet.workers[0]
            sent_metric = worker.metric("sluice_notifications_sent_total")
            retried_metric = worker.metric("sluice_notifications_retried_total")
        receipts = handle.receipts

        # exactly one result per request; none lost; the provider got each id at most once
        assert set(found) == ids
        assert {nid: len(r) for nid, r in found.items() if len(r) != 1} == {}
        latest = {nid: r[-1] for nid, r in found.items() if r[-1] is not None}
        delivered = {nid for nid, r in latest.items() if r["status"] == "DELIVERED"}
        dead = {nid for nid, r in latest.items() if r["status"] == "DEAD_LETTERED"}
        assert delivered | dead == ids
        assert not delivered & dead
        assert receipts.duplicates() == {}
        assert {r.notification_id for r in receipts.receipts()} == delivered
        assert sent_metric == len(delivered)

        # permanent errors skip retries
        for task in tasks:
            if task["recipient"].startswith(("blocked", "+1555999", "device-bad")):
                result = latest[task["notification_id"]]
                assert result["status"] == "DEAD_LETTERED"
                assert result["attempts"] == 1
                assert re.match(r"(http 400|smtp 550)", result["error"]), result

        handwritten = {(t["notification_id"], t["attempt"]) for t in delayed}
        _check_retries(settings, latest, receipts, retried_metric, handwritten)
        _check_dead_letters(settings, dead)
        # the far-future task was refused, not parked, and did not hold up the one behind it
        assert "not a retry this stage scheduled" in latest[parked["notification_id"]]["error"]
        assert latest[behind["notification_id"]]["status"] == "DELIVERED"
        # stray keys were re-keyed by notification id: one result each, under the id
        assert all(len(found[t["notification_id"]]) == 1 for t, _k in strays)
        assert not {"", "not-its-id"} & set(found)


def _check_retries(
    settings: Settings,
    latest: dict[str, Any],
    receipts: Any,
    retried_metric: float,
    handwritten: set[tuple[str, int]],
) -> None:
    """Retries were scheduled with backoff, 429 waits honoured Retry-After, none went early
    (`handwritten`: the (id, attempt) of tasks the test itself put on a delay topic)."""
    queued = [
        row
        for topic in RETRY_TOPICS
        for row in _rows(settings, topic)
        if (row["value"]["notification_id"], row["value"]["attempt"]) not in handwritten
    ]
    assert len(queued) == retried_metric > 0
    not_before = {(r["value"]["notification_id"], r["value"]["attempt"]): r for r in queued}
    rate_limited = [r for r in queued if (r["value"]["last_error"] or "").startswith("http 429")]
    assert rate_limited, "no 429 was injected"
    for row in rate_limited:  # Retry-After is 2 s; the ladder alone would give 0.4 to 0.6 s
        assert row["value"]["not_before"] - row["timestamp"] >= 2000 - 50, row
    for row in queued:
        if not (row["value"]["last_error"] or "").startswith("http 429"):
            delay = row["value"]["not_before"] - row["timestamp"]
            assert delay >= 0.8 * 500 - 50, row
    relayed = [
        row
        for channel in CHANNELS
        for row in _rows(settings, f"notifications.{channel.lower()}")
        if "value" in row and row["value"]["attempt"] > 1
    ]
    assert relayed
    for row in relayed:  # the relay published no retry before its not-before
        assert row["timestamp"] >= row["value"]["not_before"], row
    for receipt in receipts.receipts():
        attempts = latest[receipt.notification_id]["attempts"]
        if attempts > 1:
            due = not_before[(receipt.notification_id, attempts)]["value"]["not_before"]
            assert receipt.received_at_ms >= due


def _check_dead_letters(settings: Settings, dead: set[str]) -> None:
    """Every dead-lettered task is in the DLQ with why, how often and when; so is the poison."""
    rows = _rows(settings, "notifications.dlq")
    tasks = [r for r in rows if "value" in r]
    poison = [r for r in rows if "error" in r]
    assert {r["value"]["notification_id"] for r in tasks} == dead
    for row in tasks:
        headers = row["headers"]
        assert headers["sluice.error"]
        assert headers["sluice.channel"] == row["value"]["channel"]
        assert int(headers["sluice.attempts"]) >= 1
        assert int(headers["sluice.first_attempt_at"]) <= int(headers["sluice.last_attempt_at"])
        assert headers["sluice.source.topic"].startswith(settings.topic("notifications."))
        assert "sluice.source.offset" in headers
    assert len(poison) == 3
    assert {r["headers"]["sluice.source.topic"] for r in poison} == {
        settings.topic(f"notifications.{ch.lower()}") for ch in CHANNELS
    }
    assert all("single-object" in r["headers"]["sluice.error"] for r in poison)


@pytest.mark.slow
@pytest.mark.chaos
def test_an_attempt_in_flight_at_a_crash_is_not_sent_again(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    config = ProvidersConfig(smtp_port=0, http_port=0, http=HttpProviderConfig(latency_ms=4000))
    tasks = [_task(i, "SMS") for i in range(6)]
    ids = {t["notification_id"] for t in tasks}
    with providers_in_thread(config) as handle:
        settings = pipeline_settings.model_copy(
            update={
                "notifications": FAST.model_copy(update={"concurrency": 2}),
                "delivery": handle.delivery_settings(http_timeout_s=10.0),
            }
        )
        with _running(settings, tmp_path) as fleet:
            victim = fleet.workers[0]
            _produce(settings, tasks)
            time.sleep(2.0)  # two sends are in flight at the provider (4 s each)
            victim.kill()
            fleet.start("notifications", name=victim.name)
            found = _wait_results(settings, ids, fleet, timeout=90)
        time.sleep(3.0)  # the provider finishes the requests the dead worker left behind
        receipts = handle.receipts
        assert receipts.duplicates() == {}
        assert {nid: len(r) for nid, r in found.items() if len(r) != 1} == {}
        unknown = {
            nid for nid, r in found.items() if r[-1] and r[-1]["error"] == UNKNOWN_AFTER_CRASH
        }
        assert 1 <= len(unknown) <= 2, found
        delivered = {nid for nid, r in found.items() if r[-1] and r[-1]["status"] == "DELIVERED"}
        assert delivered | unknown == ids
        # the provider did get the crashed attempts: resending them would have duplicated
        assert {r.notification_id for r in receipts.receipts()} == ids


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.chaos
def test_dlq_redrive_delivers_once_the_provider_recovers(
    pipeline_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp_port, http_port = _free_port(), _free_port()
    config = ProvidersConfig(smtp_port=smtp_port, http_port=http_port)
    tasks = [_task(i, ch) for i in range(3) for ch in CHANNELS]
    ids = {t["notification_id"] for t in tasks}
    settings = pipeline_settings.model_copy(
        update={
            "notifications": FAST.model_copy(update={"max_attempts": 2, "retry_delays_s": (0.3,)}),
            "delivery": DeliverySettings(  # where the providers will listen, once they are up
                smtp=SmtpSettings(host="127.0.0.1", port=smtp_port),
                http=HttpSettings(
                    sms_url=f"http://127.0.0.1:{http_port}/sms",
                    push_url=f"http://127.0.0.1:{http_port}/push",
                    timeout_s=1.0,
                ),
            ),
        }
    )
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    with _running(settings, tmp_path) as fleet:
        _produce(settings, tasks)  # nobody listens: every attempt fails to connect
        _wait_results(settings, ids, fleet, status="DEAD_LETTERED")
        listed = _cli(["dlq", "list", "--json"])
        assert {row["notification_id"] for row in listed} == ids
        assert all("gave up after 2 attempts" in row["reason"] for row in listed)
        with providers_in_thread(config) as handle:
            assert _cli(["dlq", "redrive", "--json"])["requeued"] == 9
            found = _wait_results(settings, ids, fleet, status="DELIVERED")
            again = _cli(["dlq", "redrive", "--channel", "sms", "--json"])
            assert (again["requeued"], again["skipped_already_redriven"]) == (0, 3)
            time.sleep(4.0)  # a second redrive of the same dead letters changes nothing
            assert _results(settings) == found
            assert handle.receipts.duplicates() == {}
            assert {r.notification_id for r in handle.receipts.receipts()} == ids
    for history in found.values():  # dead, retracted by the redrive, delivered
        statuses = [r["status"] if r else None for r in history]
        assert statuses == ["DEAD_LETTERED", None, "DELIVERED"]


def _cli(args: list[str]) -> Any:
    import io
    import sys

    out = io.StringIO()
    real, sys.stdout = sys.stdout, out
    try:
        assert sluice(args) == 0
    finally:
        sys.stdout = real
    return json.loads(out.getvalue())


@pytest.mark.slow
def test_two_workers_share_the_group_rate_limit(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    rate = 8.0
    tasks = [_task(i, "SMS") for i in range(80)]
    ids = {t["notification_id"] for t in tasks}
    with providers_in_thread(ProvidersConfig(smtp_port=0, http_port=0)) as handle:
        settings = _with(pipeline_settings, handle, rate_sms=rate)
        with _running(settings, tmp_path, workers=2) as fleet:
            _produce(settings, tasks)
            _wait_results(settings, ids, fleet, timeout=60, status="DELIVERED")
            per_worker = [w.metric("sluice_notifications_sent_total") for w in fleet.workers]
        times = sorted(r.received_at_ms for r in handle.receipts.receipts())
    assert len(times) == 80
    assert all(n > 0 for n in per_worker), per_worker  # both sent: the limit was shared
    overall = (len(times) - 1) / ((times[-1] - times[0]) / 1000)
    assert overall <= rate * 1.15, overall
    window_ms, slack = 2000, 4  # a token in each bucket, and send-time jitter at the edges
    busiest = max(
        sum(1 for t in times[i:] if t < start + window_ms) for i, start in enumerate(times)
    )
    assert busiest <= rate * window_ms / 1000 + slack, busiest
    assert Counter(r.channel for r in handle.receipts.receipts()) == {"SMS": 80}
