"""Idempotency keys: a bounded LRU with an age limit, and in-flight coalescing per key."""

from __future__ import annotations

import asyncio

import pytest

from producers.intake.idempotency import IdempotencyStore, KeyEntry
from producers.intake.validation import Rejection


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def entry(order_id: str, at: float) -> KeyEntry:
    return KeyEntry(order_id, "fp", at)


def test_keys_are_forgotten_after_the_window() -> None:
    clock = Clock()
    store = IdempotencyStore(window_s=60, max_keys=10, clock=clock)
    store.remember("a", entry("O-1", clock.now))
    clock.now += 59
    assert store.get("a") == entry("O-1", 1000.0)
    clock.now += 2
    assert store.get("a") is None
    assert len(store) == 0


def test_the_oldest_keys_go_first_when_full() -> None:
    clock = Clock()
    store = IdempotencyStore(window_s=3600, max_keys=3, clock=clock)
    for n in range(5):
        store.remember(f"k{n}", entry(f"O-{n}", clock.now))
    assert len(store) == 3
    assert store.get("k0") is None
    assert store.get("k1") is None
    assert store.get("k4") is not None


def test_learning_skips_keys_older_than_the_window() -> None:
    clock = Clock(10_000.0)
    store = IdempotencyStore(window_s=100, max_keys=10, clock=clock)
    assert store.learn("new", entry("O-1", 9_950.0))
    assert not store.learn("old", entry("O-2", 9_000.0))
    assert store.get("new") is not None
    assert store.get("old") is None


def test_an_old_entry_behind_a_newer_one_is_not_returned() -> None:
    """Re-read keys arrive interleaved by partition, so ages are not in order."""
    clock = Clock(10_000.0)
    store = IdempotencyStore(window_s=100, max_keys=10, clock=clock)
    store.learn("fresh", entry("O-1", 9_990.0))
    store.learn("older", entry("O-2", 9_910.0))
    clock.now = 10_020.0  # "older" is now out of the window, behind a fresh entry
    assert store.get("older") is None
    assert store.get("fresh") is not None


def test_concurrent_callers_share_one_attempt() -> None:
    store = IdempotencyStore(window_s=60, max_keys=10)
    calls = []

    async def attempt() -> str:
        calls.append(1)
        await asyncio.sleep(0.05)
        return "O-1"

    async def caller() -> str:
        flight = store.in_flight("k")
        if flight is not None:
            return str(await store.join(flight))
        return await store.single_flight("k", "fp", attempt)

    async def main() -> list[str]:
        return await asyncio.gather(*(caller() for _ in range(10)))

    assert asyncio.run(main()) == ["O-1"] * 10
    assert len(calls) == 1
    assert store.in_flight("k") is None


def test_waiters_get_the_first_attempts_error() -> None:
    store = IdempotencyStore(window_s=60, max_keys=10)

    async def attempt() -> str:
        await asyncio.sleep(0.02)
        raise Rejection(503, "broker down")

    async def main() -> list[object]:
        first = asyncio.create_task(store.single_flight("k", "fp", attempt))
        await asyncio.sleep(0)
        flight = store.in_flight("k")
        assert flight is not None
        second = asyncio.create_task(store.join(flight))
        return list(await asyncio.gather(first, second, return_exceptions=True))

    results = asyncio.run(main())
    assert all(isinstance(r, Rejection) and r.status == 503 for r in results)


def test_a_cancelled_attempt_tells_its_waiters_to_retry() -> None:
    store = IdempotencyStore(window_s=60, max_keys=10)

    async def main() -> BaseException:
        first = asyncio.create_task(store.single_flight("k", "fp", lambda: asyncio.sleep(10)))
        await asyncio.sleep(0)
        flight = store.in_flight("k")
        assert flight is not None
        second = asyncio.create_task(store.join(flight))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(Rejection) as caught:
            await second
        return caught.value

    error = asyncio.run(main())
    assert isinstance(error, Rejection)
    assert error.status == 503
    assert store.in_flight("k") is None
