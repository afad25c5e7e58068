from __future__ import annotations

import io

import pytest

from pipelines.progress import progress
from pipelines.stats import Reservoir
from producers.sender import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_rate_limiter_holds_a_steady_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100.0, burst=1, clock=clock, sleep=clock.sleep)
    for _ in range(501):
        limiter.acquire()
    assert clock.now == pytest.approx(5.0, rel=0.01)


def test_rate_limiter_zero_means_unlimited() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.0, clock=clock, sleep=clock.sleep)
    for _ in range(10_000):
        limiter.acquire()
    assert clock.now == 0.0


def test_rate_limiter_idles_through_the_given_callback() -> None:
    clock = FakeClock()
    idled: list[float] = []

    def idle(seconds: float) -> None:
        idled.append(seconds)
        clock.sleep(seconds)

    limiter = RateLimiter(10.0, burst=1, clock=clock, sleep=lambda _s: None)
    for _ in range(3):
        limiter.acquire(idle=idle)
    assert idled
    assert clock.now == pytest.approx(0.2, rel=0.01)


def test_negative_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(-1)


def test_reservoir_quantiles_are_exact_below_capacity() -> None:
    res = Reservoir(capacity=1000)
    for v in range(1, 101):
        res.add(float(v))
    assert res.quantile(0.5) == 50.0
    assert res.quantile(0.99) == 99.0
    assert res.quantile(1.0) == 100.0


def test_reservoir_stays_bounded_and_representative() -> None:
    res = Reservoir(capacity=2000, seed=3)
    for v in range(200_000):
        res.add(float(v))
    assert len(res) == 2000
    assert res.count == 200_000
    median = res.quantile(0.5)
    assert median is not None
    assert 85_000 < median < 115_000


def test_empty_reservoir_has_no_quantile() -> None:
    assert Reservoir().quantile(0.5) is None


def test_progress_prints_plain_lines_off_a_terminal() -> None:
    out = io.StringIO()
    with progress("orders", total=10, stream=out, interval=0.0) as rep:
        for _ in range(10):
            rep.advance()
    lines = out.getvalue().splitlines()
    assert lines
    assert lines[-1].startswith("orders: 10/10 (")
