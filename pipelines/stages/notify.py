"""One notification's life, as a pure state machine: send at most once, retry, dead-letter.

Tasks arrive at least once (duplicates upstream, redeliveries after a crash, retries
re-published by the delay relay), so every decision is taken against two records the
notifications stage keeps per notification id:

* the *attempt state* (the `attempts` table): which attempt is in flight or failed, and
  the source record that started it. The stage writes "attempt N sending" and waits for
  Kafka to acknowledge it *before* calling the provider, so a task that finds attempt N
  still "sending" after a crash knows the provider may have it: it is not sent again
  (dead-lettered as "outcome unknown", for a human to redrive) unless the provider
  deduplicates by idempotency key. A timeout is the same situation and treated the same;
* the *result* (the `results` table, whose changelog is notifications.results): once
  there, every later copy of the task is a duplicate.

A redrive (`sluice dlq redrive`) opens a new *generation* of a dead-lettered id: its tasks
carry a token naming the dead letter they came from. A new token on a dead-lettered id
retracts the old result and starts a fresh attempt budget; a token already seen, or a
task of an older generation, changes nothing.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pipelines.delivery import DeliveryError, delay_topic_for, next_attempt
from pipelines.topology import DELAY_PREFIX, RETRY_LADDER_S

Task = dict[str, Any]
State = dict[str, Any]
Source = tuple[str, int, int]  # topic, partition, offset of the task record
Kind = Literal["skip", "send", "defer", "retry", "deliver", "dead"]

#: Channels whose provider gets an Idempotency-Key (HTTP) and so may drop a resend.
HTTP_CHANNELS = frozenset({"SMS", "PUSH"})
#: Failures after which the provider may or may not have taken the message.
AMBIGUOUS = frozenset({"http timeout", "http error", "smtp timeout", "sender error"})
UNKNOWN_AFTER_CRASH = "outcome unknown after a crash; not resent"
#: The delay topics' steps in seconds (declared in the topology, which names the topics).
LADDER_S = RETRY_LADDER_S
REDRIVE_HEADER = "sluice.redrive"


@dataclass(frozen=True)
class Policy:
    """Retry budget and timing, and whether an unknown outcome may be resent."""

    max_attempts: int = 4
    delays_s: tuple[float, ...] = RETRY_LADDER_S
    jitter: float = 0.2
    provider_idempotent: bool = False
    #: The longest provider `Retry-After` honoured; a longer one is cut to this.
    max_retry_after_s: float = 3600.0

    @property
    def max_hold_ms(self) -> int:
        """The furthest ahead a retry Sluice schedules can be due, plus a minute of clock
        skew between workers. A task due later than this did not come from this policy
        (a hand-made record, a clock far off): it would hold its delay partition, and
        every retry queued behind it, for as long as it says."""
        longest = max(self.delays_s) * (1 + self.jitter) + self.max_retry_after_s
        return int(longest * 1000) + 60_000

    def may_resend_unknown(self, channel: str) -> bool:
        """Only HTTP providers get an idempotency key, and only if they honour it."""
        return self.provider_idempotent and channel in HTTP_CHANNELS


@dataclass(frozen=True)
class Step:
    """What the stage does next for one task.

    `send`: record `state` durably, then call the provider with `task`.
    `defer`: re-queue the record unchanged to `delay_topic` (it arrived before `not_before`).
    `retry`: store `state` (if any), queue `task` (the next attempt) to `delay_topic`.
    `deliver` / `dead`: publish `result`; `dead` also stores `state` and dead-letters `task`.
    """

    kind: Kind
    note: str = ""
    state: State | None = None
    task: Task | None = None
    delay_topic: str | None = None
    result: dict[str, Any] | None = None
    clear_result: bool = False
    error: str | None = None


def on_task(
    task: Task,
    *,
    state: State | None,
    result: str | None,
    token: str | None,
    source: Source,
    busy: bool,
    now_ms: int,
    policy: Policy,
) -> Step:
    """A task arrived: skip it, send it, defer it, or finish what a crash interrupted.

    `result` is the status of the stored result (None, DELIVERED or DEAD_LETTERED);
    `busy` says this worker is processing the same id right now; `token` is the
    redrive token the record carries, if any.
    """
    if result == "DELIVERED":
        return Step("skip", "already delivered")
    if busy:
        return Step("skip", "being processed in this worker")
    if task["not_before"] > now_ms + policy.max_hold_ms:
        return _too_far_ahead(task, state, token, source, now_ms)
    if state is not None and state.get("redrive") != token:
        return _other_generation(task, state, token, source, now_ms)
    if state is None:
        return _fresh(task, result, token, source, now_ms)
    return _against(task, state, result=result, source=source, now_ms=now_ms, policy=policy)


def _too_far_ahead(
    task: Task, state: State | None, token: str | None, source: Source, now_ms: int
) -> Step:
    """A task due further ahead than any retry this stage schedules: end it, for a human.

    Deferring it would park it in a delay topic for years; sending it early would ignore
    what it says. Dead-lettering keeps it (with the reason) for `sluice dlq redrive`.
    """
    error = (
        f"not_before {task['not_before']} is more than the longest retry wait ahead of "
        f"{now_ms}; not a retry this stage scheduled"
    )
    base: State = state or {
        "attempt": task["attempt"],
        "by": list(source),
        "first_at": now_ms,
        "last_at": now_ms,
        "redrive": token,
    }
    return _dead(task, base, error, now_ms, note="due too far ahead")


def _other_generation(
    task: Task, state: State, token: str | None, source: Source, now_ms: int
) -> Step:
    """The task's redrive token differs from the stored generation's."""
    if token is not None and state["phase"] == "dead":
        return _send(task, None, token, source, now_ms, clear=True, note="redriven")
    return Step("skip", "stale generation" if token is None else "generation still open")


def _fresh(task: Task, result: str | None, token: str | None, source: Source, now_ms: int) -> Step:
    """No attempt state: a first attempt, or a redrive of a dead letter whose state is gone."""
    if result == "DEAD_LETTERED" and token is None:
        return Step("skip", "already dead-lettered")
    redriven = result == "DEAD_LETTERED"
    return _send(task, None, token, source, now_ms, clear=redriven, note="first attempt")


def _against(
    task: Task, state: State, *, result: str | None, source: Source, now_ms: int, policy: Policy
) -> Step:
    """A task of the current generation, compared with the attempt state."""
    attempt, known, phase = task["attempt"], state["attempt"], state["phase"]
    if phase == "dead":
        return _dead_again(task, state, result, now_ms)
    if attempt < known:
        return Step("skip", "stale attempt")
    if attempt > known:  # its predecessor failed (the retry exists): go on
        return _send(task, state, state.get("redrive"), source, now_ms, note="retry")
    if phase == "failed":
        if list(source) == state["by"]:  # redelivered after a crash: the retry may be lost
            return _retry_again(task, state)
        return Step("skip", "duplicate of a failed attempt")
    return _in_flight_at_crash(task, state, source, now_ms, policy)


def _dead_again(task: Task, state: State, result: str | None, now_ms: int) -> Step:
    """The generation ended dead; re-publish the result only if a crash lost it."""
    if result is None:
        return _dead(task, state, state["error"], now_ms, note="dead letter re-emitted")
    return Step("skip", "already dead-lettered")


def _in_flight_at_crash(
    task: Task, state: State, source: Source, now_ms: int, policy: Policy
) -> Step:
    """The attempt was handed to the provider and nobody recorded how it went."""
    if policy.may_resend_unknown(task["channel"]):
        note = "resent after a crash; the provider drops duplicates by idempotency key"
        return _send(task, state, state.get("redrive"), source, now_ms, note=note)
    return _dead(task, state, UNKNOWN_AFTER_CRASH, now_ms, note="in flight at a crash")


def _send(
    task: Task,
    previous: State | None,
    token: str | None,
    source: Source,
    now_ms: int,
    *,
    clear: bool = False,
    note: str = "",
) -> Step:
    """Send `task` now, or defer it if it is early (a clock ahead of ours re-queued it)."""
    if task["not_before"] > now_ms:
        return Step("defer", "not due yet", delay_topic=delay_topic(task["not_before"], now_ms))
    state: State = {
        "attempt": task["attempt"],
        "phase": "sending",
        "by": list(source),
        "first_at": previous["first_at"] if previous else now_ms,
        "last_at": now_ms,
        "error": previous["error"] if previous else task.get("last_error"),
        "redrive": token,
    }
    return Step("send", note, state=state, task=task, clear_result=clear)


def on_sent(task: Task, state: State, provider_id: str, now_ms: int) -> Step:
    """The provider took the notification: the one DELIVERED result."""
    record = result_record(
        task, "DELIVERED", state["attempt"], error=None, provider_id=provider_id, now_ms=now_ms
    )
    return Step("deliver", "delivered", task=task, result=record)


def on_failed(
    task: Task,
    state: State,
    error: DeliveryError,
    *,
    now_ms: int,
    policy: Policy,
    rng: random.Random | None = None,
) -> Step:
    """The send failed: retry after a backoff, or dead-letter (permanent, unknown, exhausted)."""
    attempt, message = state["attempt"], str(error)
    if error.reason in AMBIGUOUS and not policy.may_resend_unknown(task["channel"]):
        return _dead(task, state, f"outcome unknown after {message}; not resent", now_ms)
    if not error.retriable and error.reason not in AMBIGUOUS:
        return _dead(task, state, message, now_ms, note="permanent failure")
    if attempt >= policy.max_attempts:
        return _dead(task, state, f"{message} (gave up after {attempt} attempts)", now_ms)
    not_before = next_attempt(
        attempt,
        now_ms,
        delays_s=policy.delays_s,
        jitter=policy.jitter,
        rng=rng,
        retry_after_s=_capped(error.retry_after_s, policy.max_retry_after_s),
    )
    topic = delay_topic(not_before, now_ms)
    failed: State = {
        **state,
        "phase": "failed",
        "error": message,
        "retry": {"not_before": not_before, "topic": topic},
    }
    return _retry_again(task, failed)


def _capped(retry_after_s: float | None, limit_s: float) -> float | None:
    """A provider's Retry-After, at most `limit_s` (a 429 asking for a year is a bug)."""
    return None if retry_after_s is None else min(retry_after_s, limit_s)


def _retry_again(task: Task, state: State) -> Step:
    """The next attempt's task, as recorded in a failed attempt's state."""
    retry = state["retry"]
    queued = {
        **task,
        "attempt": state["attempt"] + 1,
        "not_before": retry["not_before"],
        "last_error": state["error"],
    }
    return Step("retry", "retry scheduled", state=state, task=queued, delay_topic=retry["topic"])


def abandoned(task: Task, state: State, error: str, now_ms: int) -> Step:
    """The stage itself failed on a recorded attempt: end the id dead, with the error.

    Leaving it open would block it for good (its state says an attempt is under way), and
    whether the provider got it is unknown, so this is the crash case made explicit.
    """
    return _dead(task, state, error, now_ms, note="abandoned after a stage error")


def _dead(task: Task, state: State, error: str, now_ms: int, *, note: str = "") -> Step:
    dead: State = {**state, "phase": "dead", "error": error, "dead_at": now_ms}
    record = result_record(
        task, "DEAD_LETTERED", state["attempt"], error=error, provider_id=None, now_ms=now_ms
    )
    return Step("dead", note or error, state=dead, task=task, result=record, error=error)


def delay_topic(not_before_ms: int, now_ms: int) -> str:
    """The catalog name of the delay topic that holds a task due at `not_before_ms`."""
    return DELAY_PREFIX + delay_topic_for(not_before_ms, now_ms, LADDER_S)


def result_record(
    task: Mapping[str, Any],
    status: str,
    attempts: int,
    *,
    error: str | None,
    provider_id: str | None,
    now_ms: int,
) -> dict[str, Any]:
    """A NotificationResult for `task`."""
    return {
        "notification_id": task["notification_id"],
        "order_id": task["order_id"],
        "channel": task["channel"],
        "status": status,
        "attempts": attempts,
        "error": error,
        "provider_message_id": provider_id,
        "requested_at": task["created_at"],
        "completed_at": now_ms,
    }


def dead_letter_headers(
    task: Mapping[str, Any], state: Mapping[str, Any]
) -> list[tuple[str, bytes]]:
    """What a dead-lettered task's DLQ record says besides the reason and source."""
    headers = {
        "sluice.notification_id": task["notification_id"],
        "sluice.channel": task["channel"],
        "sluice.attempts": str(state["attempt"]),
        "sluice.first_attempt_at": str(state["first_at"]),
        "sluice.last_attempt_at": str(state["last_at"]),
    }
    if state.get("redrive"):
        headers[REDRIVE_HEADER] = str(state["redrive"])
    return [(name, value.encode()) for name, value in headers.items()]


P = TypeVar("P", bound=Hashable)
R = TypeVar("R")


class DelayGate(Generic[P, R]):
    """Records held back per partition until due, in partition order.

    The delay relay fetches records and holds them here; a partition whose head is not
    due yet is paused (nothing behind the head may pass it: order within a partition is
    kept, and a delay topic's records are close to due-time order anyway). Pure
    bookkeeping, so the relay's scheduling is tested without a broker.
    """

    def __init__(self) -> None:
        self._held: dict[P, deque[tuple[int, R]]] = {}

    def hold(self, partition: P, due_ms: int, record: R) -> None:
        """Queue `record` behind what `partition` already holds."""
        self._held.setdefault(partition, deque()).append((due_ms, record))

    def release(self, now_ms: int) -> list[tuple[P, R]]:
        """Every record due by `now_ms`, stopping per partition at the first that is not."""
        out: list[tuple[P, R]] = []
        for partition, queue in self._held.items():
            while queue and queue[0][0] <= now_ms:
                out.append((partition, queue.popleft()[1]))
        return out

    def waiting(self) -> set[P]:
        """Partitions whose head is not due: the ones to keep paused."""
        return {p for p, queue in self._held.items() if queue}

    def next_due(self) -> int | None:
        """When the earliest held head becomes due, or None when nothing is held."""
        heads = [queue[0][0] for queue in self._held.values() if queue]
        return min(heads) if heads else None

    def drop(self, partitions: set[P]) -> None:
        """Forget revoked partitions (their next owner re-reads from the committed offset)."""
        for partition in partitions:
            self._held.pop(partition, None)

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._held.values())
