"""Retry timing: the ladder, jitter bounds, Retry-After, and the delay topic choice."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.delivery import delay_topic_for, delay_topic_suffixes, next_attempt

NOW = 1_800_000_000_000


def test_walks_the_ladder_then_stays_on_the_last_step_without_jitter() -> None:
    delays = [next_attempt(a, NOW, jitter=0) - NOW for a in range(1, 7)]
    assert delays == [1_000, 10_000, 60_000, 60_000, 60_000, 60_000]


def test_custom_ladder() -> None:
    ladder = (0.5, 2, 8)
    assert [next_attempt(a, NOW, delays_s=ladder, jitter=0) - NOW for a in (1, 2, 3, 4)] == [
        500,
        2_000,
        8_000,
        8_000,
    ]


def test_jitter_spreads_retries_within_bounds() -> None:
    rng = random.Random(7)
    delays = [next_attempt(2, NOW, rng=rng) - NOW for _ in range(500)]
    assert min(delays) >= 8_000
    assert max(delays) <= 12_000
    assert len(set(delays)) > 100, "jitter should spread retries, not repeat one value"
    assert min(delays) < 9_000
    assert max(delays) > 11_000


def test_same_seed_same_schedule() -> None:
    first = [next_attempt(a, NOW, rng=random.Random(3)) for a in (1, 2, 3)]
    second = [next_attempt(a, NOW, rng=random.Random(3)) for a in (1, 2, 3)]
    assert first == second


@given(
    attempt=st.integers(1, 50),
    now=st.integers(0, 2**42),
    jitter=st.floats(0, 0.9),
    seed=st.integers(0, 2**32),
)
def test_never_earlier_than_scheduled(attempt: int, now: int, jitter: float, seed: int) -> None:
    """The next try is at least the step's lower jitter bound after now, never sooner."""
    step = (1, 10, 60)[min(attempt, 3) - 1]
    got = next_attempt(attempt, now, jitter=jitter, rng=random.Random(seed))
    assert got >= now + step * (1 - jitter) * 1000 - 1e-6
    assert got <= now + step * (1 + jitter) * 1000 + 1
    assert got > now


@given(
    attempt=st.integers(1, 10),
    retry_after=st.floats(0.001, 3600, allow_nan=False),
    seed=st.integers(0, 2**32),
)
def test_retry_after_is_honoured(attempt: int, retry_after: float, seed: int) -> None:
    got = next_attempt(attempt, NOW, rng=random.Random(seed), retry_after_s=retry_after)
    assert got >= NOW + retry_after * 1000


def test_retry_after_longer_than_the_step_wins_shorter_does_not() -> None:
    assert next_attempt(1, NOW, jitter=0, retry_after_s=30) == NOW + 30_000
    assert next_attempt(3, NOW, jitter=0, retry_after_s=2) == NOW + 60_000
    assert next_attempt(1, NOW, jitter=0, retry_after_s=1.0005) == NOW + 1_001


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempt": 0}, "attempt counts from 1"),
        ({"jitter": 1.0}, "jitter"),
        ({"delays_s": ()}, "ladder"),
        ({"delays_s": (10, 1)}, "ladder"),
        ({"delays_s": (0, 1)}, "ladder"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"attempt": 1, "now_ms": NOW, **kwargs}
    with pytest.raises(ValueError, match=message):
        next_attempt(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("wait_ms", "suffix"),
    [
        (-5_000, "1s"),
        (0, "1s"),
        (800, "1s"),
        (1_000, "1s"),
        (1_001, "10s"),
        (9_500, "10s"),
        (10_000, "10s"),
        (45_000, "60s"),
        (60_000, "60s"),
        (3_600_000, "60s"),
    ],
)
def test_delay_topic_is_the_smallest_step_covering_the_wait(wait_ms: int, suffix: str) -> None:
    assert delay_topic_for(NOW + wait_ms, NOW, (1, 10, 60)) == suffix


def test_delay_topic_suffixes_name_every_step() -> None:
    assert delay_topic_suffixes() == ["1s", "10s", "60s"]
    assert delay_topic_suffixes((0.5, 5)) == ["0.5s", "5s"]


@given(attempt=st.integers(1, 20), seed=st.integers(0, 2**32))
def test_a_retry_lands_in_a_topic_no_shorter_than_its_wait_within_the_ladder(
    attempt: int, seed: int
) -> None:
    due = next_attempt(attempt, NOW, rng=random.Random(seed))
    topic = delay_topic_for(due, NOW)
    assert topic in delay_topic_suffixes()
    step = float(topic[:-1])
    assert step * 1000 >= min(due - NOW, 60_000)
