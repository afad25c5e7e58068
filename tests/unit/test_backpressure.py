from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.backpressure import Hysteresis
from pipelines.settings import BackpressureSettings, Settings
from producers.throttle import Throttle


def test_marks_must_be_ordered_and_positive() -> None:
    with pytest.raises(ValidationError, match=r"low mark .* must be below high"):
        BackpressureSettings(high=100, low=100)
    with pytest.raises(ValidationError):
        BackpressureSettings(high=0, low=0)
    with pytest.raises(ValidationError, match="backpressure"):
        Settings(backpressure={"high": 5, "low": 9})  # type: ignore[arg-type]


def test_hysteresis_pauses_above_high_and_resumes_below_low() -> None:
    h = Hysteresis(high=100, low=20)
    assert [h.update(x) for x in (50, 101, 150, 60, 20, 19, 50)] == [
        None,
        "pause",
        None,
        None,
        None,
        "resume",
        None,
    ]


def test_no_flapping_between_the_marks() -> None:
    h = Hysteresis(high=100, low=20)
    h.update(150)
    for lag in [99, 21, 80, 30, 99, 21] * 20:
        assert h.update(lag) is None
    assert h.paused
    assert h.transitions == 1


class FakeSignal:
    def __init__(self, lags: list[int], high: int, low: int) -> None:
        self.lags, self.lag = list(lags), 0
        self.state = Hysteresis(high, low)

    def measure(self) -> str | None:
        self.lag = self.lags.pop(0) if self.lags else self.lag
        return self.state.update(self.lag)

    @property
    def paused(self) -> bool:
        return self.state.paused


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_block_waits_while_paused_and_counts_it() -> None:
    clock = Clock()
    signal = FakeSignal([500, 400, 300, 10], high=100, low=20)
    t = Throttle("block", signal, 100.0, 100, 20, interval_s=1.0, clock=clock, sleep=clock.sleep)
    t()
    assert t.throttled_s == pytest.approx(3.0)
    assert not signal.paused


def test_adaptive_halves_above_high_and_recovers_additively() -> None:
    clock = Clock()
    signal = FakeSignal([500, 500, 50, 5, 5, 5], high=100, low=20)
    t = Throttle(
        "adaptive", signal, 1000.0, 100, 20, interval_s=1.0, clock=clock, sleep=clock.sleep
    )
    rates = []
    for _ in range(6):
        clock.now += 1.0
        t()
        rates.append(t.rate)
    assert rates[:3] == [500.0, 250.0, 250.0]
    assert rates[3:] == [350.0, 450.0, 550.0]


def test_off_never_waits() -> None:
    clock = Clock()
    t = Throttle("off", FakeSignal([10**9], 1, 0), 10.0, 1, 0, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        t()
    assert t.throttled_s == 0
