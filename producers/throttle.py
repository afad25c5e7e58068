"""Producers slow down on the first stage's lag: `--backpressure off|block|adaptive`.

* `block` stops sending while the order stage's lag is above its high mark and starts
  again below the low mark (the same hysteresis the Faust controller uses);
* `adaptive` is AIMD on the same signal: above the high mark the rate halves, below the
  low mark it grows by a tenth of the target rate per interval, in between it holds.

The lag is measured at most once per interval, between sends, so the throttle costs
nothing per record; time spent waiting is counted in the run's summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pipelines.backpressure import EDGES, LagSignal
from pipelines.settings import Settings

Mode = Literal["off", "block", "adaptive"]


class Measurable(Protocol):
    """What the throttle needs from a lag signal (a LagSignal, or a fake in unit tests)."""

    @property
    def lag(self) -> int: ...

    def measure(self) -> str | None: ...

    @property
    def paused(self) -> bool: ...


class _SignalAdapter:
    def __init__(self, signal: LagSignal) -> None:
        self.signal = signal

    @property
    def lag(self) -> int:
        return self.signal.lag

    def measure(self) -> str | None:
        return self.signal.measure()

    @property
    def paused(self) -> bool:
        return self.signal.state.paused


@dataclass
class Throttle:
    """Called before each send; waits as the mode says. `throttled_s` is the time waited."""

    mode: Mode
    signal: Measurable
    target_rate: float
    high: int
    low: int
    interval_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    throttled_s: float = 0.0
    rate: float = field(init=False)
    _next_measure: float = field(default=0.0, init=False)
    _next_send: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.rate = self.target_rate

    def __call__(self, _sender: object = None) -> None:
        if self.mode == "off":
            return
        self._maybe_measure()
        if self.mode == "block":
            while self.signal.paused:
                self._wait(self.interval_s)
                self._maybe_measure()
        elif self.rate > 0:
            now = self.clock()
            if self._next_send > now:
                self._wait(self._next_send - now)
            self._next_send = max(self._next_send, now) + 1.0 / self.rate

    def _maybe_measure(self) -> None:
        now = self.clock()
        if now < self._next_measure:
            return
        self._next_measure = now + self.interval_s
        self.signal.measure()
        if self.mode == "adaptive":
            self._adapt(self.signal.lag)

    def _adapt(self, lag: int) -> None:
        if lag > self.high:
            self.rate = max(1.0, self.rate / 2)
        elif lag < self.low:
            self.rate = min(self.target_rate, self.rate + self.target_rate / 10)

    def _wait(self, seconds: float) -> None:
        self.sleep(seconds)
        self.throttled_s += seconds


def throttle_for(settings: Settings, mode: Mode, rate: float) -> Throttle:
    """A throttle on the order stage's lag (the edge producers feed)."""
    marks = settings.backpressure
    signal = _SignalAdapter(LagSignal(settings, EDGES["intake"], marks))
    target = rate if rate > 0 else 20_000.0  # "as fast as possible" still needs a ceiling to adapt
    return Throttle(mode, signal, target, marks.high, marks.low, marks.interval_s)
