"""Rate limiting: the bucket holds its rate and burst on a fake clock; shares add up."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.delivery import TokenBucket, worker_share


class AutoTime:
    """A clock where sleeping simply moves time forward: hours run in microseconds."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        await asyncio.sleep(0)


class ManualTime:
    """A clock the test moves; sleepers wake only when `advance` passes their deadline."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, future in self._sleepers:
            if deadline <= self.now + 1e-9 and not future.done():
                future.set_result(None)
        for _ in range(10):
            await asyncio.sleep(0)


def test_rate_holds_over_a_long_run() -> None:
    time = AutoTime()
    bucket = TokenBucket(50, burst=5, clock=time.clock, sleep=time.sleep)

    async def run() -> None:
        for _ in range(1_000):
            await bucket.acquire()

    asyncio.run(run())
    assert time.now == pytest.approx((1_000 - 5) / 50, rel=1e-6)


def test_no_window_exceeds_burst_plus_rate_times_length() -> None:
    time = AutoTime()
    rate, burst = 20.0, 4
    bucket = TokenBucket(rate, burst=burst, clock=time.clock, sleep=time.sleep)
    stamps: list[float] = []

    async def worker(n: int) -> None:
        for _ in range(n):
            await bucket.acquire()
            stamps.append(time.now)

    async def run() -> None:
        await asyncio.gather(*(worker(50) for _ in range(4)))

    asyncio.run(run())
    assert len(stamps) == 200
    for i, start in enumerate(stamps):
        for length in (0.0, 0.25, 1.0, 3.0):
            inside = sum(1 for s in stamps[i:] if s <= start + length + 1e-9)
            assert inside <= burst + rate * length + 1e-6


def test_burst_is_available_at_once_and_never_more() -> None:
    time = AutoTime()
    bucket = TokenBucket(10, burst=3, clock=time.clock, sleep=time.sleep)

    async def run() -> None:
        for _ in range(3):
            await bucket.acquire()
        assert time.now == 0.0, "a full bucket gives its burst without waiting"
        await bucket.acquire()
        assert time.now == pytest.approx(0.1)
        time.now += 3_600  # a long idle spell still only refills to the burst
        assert bucket.available() == 3
        for _ in range(4):
            await bucket.acquire()
        assert time.now == pytest.approx(3_600.2)

    asyncio.run(run())


def test_set_rate_mid_stream_changes_the_pace() -> None:
    time = AutoTime()
    bucket = TokenBucket(10, burst=1, clock=time.clock, sleep=time.sleep)

    async def take(n: int) -> float:
        start = time.now
        for _ in range(n):
            await bucket.acquire()
        return time.now - start

    async def run() -> tuple[float, float]:
        slow = await take(21)  # the first token is the burst
        bucket.set_rate(100)
        fast = await take(100)
        return slow, fast

    slow, fast = asyncio.run(run())
    assert slow == pytest.approx(2.0)
    assert fast == pytest.approx(1.0)


def test_a_waiter_wakes_when_the_rate_rises() -> None:
    """A caller waiting 10 s at the old rate is served at the new rate, not after 10 s."""
    time = ManualTime()
    bucket = TokenBucket(0.1, burst=1, clock=time.clock, sleep=time.sleep)

    async def run() -> None:
        await bucket.acquire()
        waiter = asyncio.create_task(bucket.acquire())
        await time.advance(1.0)
        assert not waiter.done()
        bucket.set_rate(10)  # 0.1 token earned so far; 0.9 more takes 0.09 s now
        await time.advance(0.05)
        assert not waiter.done()
        await time.advance(0.05)
        assert waiter.done()
        await waiter

    asyncio.run(run())


def test_rate_zero_blocks_until_raised() -> None:
    time = ManualTime()
    bucket = TokenBucket(0, burst=1, clock=time.clock, sleep=time.sleep)

    async def run() -> None:
        await bucket.acquire()  # the initial burst
        waiter = asyncio.create_task(bucket.acquire())
        await time.advance(10_000)
        assert not waiter.done(), "a worker owning no partitions must not send"
        bucket.set_rate(2)
        await time.advance(0.5)
        await asyncio.wait_for(waiter, 1)

    asyncio.run(run())


def test_waiters_are_served_in_arrival_order() -> None:
    time = AutoTime()
    bucket = TokenBucket(5, burst=1, clock=time.clock, sleep=time.sleep)
    order: list[int] = []

    async def one(i: int) -> None:
        await bucket.acquire()
        order.append(i)

    async def run() -> None:
        await asyncio.gather(*(one(i) for i in range(10)))

    asyncio.run(run())
    assert order == list(range(10))


@pytest.mark.parametrize(
    ("rate", "burst", "message"),
    [(-1, 1, "negative"), (1, 0.5, "burst")],
)
def test_bad_bucket_arguments(rate: float, burst: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TokenBucket(rate, burst)


def test_cannot_take_more_than_the_burst() -> None:
    bucket = TokenBucket(1, burst=2)
    with pytest.raises(ValueError, match="burst"):
        asyncio.run(bucket.acquire(3))
    with pytest.raises(ValueError, match="negative"):
        bucket.set_rate(-0.1)


def test_worker_share_examples() -> None:
    assert worker_share(100, 3, 6) == 50
    assert worker_share(100, 0, 6) == 0
    assert worker_share(100, 6, 6) == 100
    assert worker_share(0, 2, 6) == 0


@pytest.mark.parametrize(("owned", "total"), [(-1, 6), (7, 6), (0, 0)])
def test_worker_share_refuses_impossible_ownership(owned: int, total: int) -> None:
    with pytest.raises(ValueError, match="partitions"):
        worker_share(10, owned, total)


@given(
    group_rate=st.floats(0, 1e6, allow_nan=False),
    total=st.integers(1, 240),
    workers=st.integers(1, 12),
    data=st.data(),
)
def test_shares_sum_to_the_group_rate_for_any_assignment(
    group_rate: float, total: int, workers: int, data: st.DataObject
) -> None:
    owners = data.draw(st.lists(st.integers(0, workers - 1), min_size=total, max_size=total))
    owned = [owners.count(w) for w in range(workers)]
    shares = [worker_share(group_rate, n, total) for n in owned]
    assert math.isclose(sum(shares), group_rate, rel_tol=1e-9, abs_tol=1e-9)
    assert all(s == 0 for s, n in zip(shares, owned, strict=True) if n == 0)
