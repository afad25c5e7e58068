"""Backpressure at the front door: refuse (or hold) new orders while the order stage lags.

A background task measures the lag of the order stage's group on `orders.placed`
(`EDGES["intake"]`) every `interval_s`, through the same `LagSignal` and hysteresis the
Faust controller uses. While it is paused, `admit` either sheds at once (429 with a
`Retry-After` from the lag and the group's drain rate) or, in queue mode, holds up to
`queue_limit` requests until the lag is back under the low mark, and answers 429 beyond
that bound and 503 for a request held longer than `queue_timeout_s`. Shedding is the
default: a client that retries later costs nothing, while held requests cost sockets
and memory and only help clients that cannot retry.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from confluent_kafka import KafkaException

from pipelines.backpressure import Hysteresis
from pipelines.errors import SluiceError
from producers.intake.validation import Rejection

log = logging.getLogger(__name__)


class Signal(Protocol):
    """What the gate reads: `pipelines.backpressure.LagSignal` satisfies it."""

    state: Hysteresis
    lag: int

    def ameasure(self) -> Awaitable[str | None]: ...

    def retry_after_s(self, floor: float = 1.0, ceiling: float = 120.0) -> float: ...


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds (RFC 9110 delay-seconds), at least 1."""
    return str(max(1, math.ceil(seconds)))


class Gate:
    """Admission control on one lag signal; no signal means always open."""

    def __init__(
        self,
        signal: Signal | None,
        *,
        mode: Literal["shed", "queue"] = "shed",
        queue_limit: int = 1000,
        queue_timeout_s: float = 30.0,
        interval_s: float = 1.0,
        on_transition: Callable[[str, int], None] | None = None,
    ) -> None:
        self.signal = signal
        self.mode = mode
        self.queue_limit = queue_limit
        self.queue_timeout_s = queue_timeout_s
        self.interval_s = interval_s
        self.on_transition = on_transition
        self.waiting = 0
        self.failures = 0
        self._open = asyncio.Event()
        self._open.set()

    @property
    def paused(self) -> bool:
        return self.signal is not None and self.signal.state.paused

    async def measure(self) -> None:
        """Measure once and open or close the gate; a failed measurement keeps the state."""
        if self.signal is None:
            return
        try:
            transition = await self.signal.ameasure()
        except (SluiceError, KafkaException) as exc:
            self.failures += 1
            if self.failures == 1:
                log.warning(
                    "cannot measure the order stage's lag (keeping the last state): %s", exc
                )
            return
        self.failures = 0
        if transition is not None:
            log.warning("intake %s: order stage lag %d", transition, self.signal.lag)
            if self.on_transition is not None:
                self.on_transition(transition, self.signal.lag)
        self.sync()

    def sync(self) -> None:
        """Make the event that held requests wait on match the signal's state."""
        if self.paused:
            self._open.clear()
        else:
            self._open.set()

    async def watch(self) -> None:
        """Measure every `interval_s` until cancelled."""
        while True:
            await self.measure()
            await asyncio.sleep(self.interval_s)

    async def admit(self) -> None:
        """Return when a new order may be published; raise a Rejection when it may not."""
        if not self.paused:
            return
        if self.mode == "shed":
            raise self._refusal(429, "the order pipeline is behind")
        if self.waiting >= self.queue_limit:
            raise self._refusal(429, f"the order pipeline is behind and {self.waiting} are queued")
        self.sync()
        self.waiting += 1
        try:
            await asyncio.wait_for(self._open.wait(), self.queue_timeout_s)
        except TimeoutError:
            raise self._refusal(
                503, f"the order pipeline stayed behind for {self.queue_timeout_s:.0f}s"
            ) from None
        finally:
            self.waiting -= 1

    def _refusal(self, status: int, reason: str) -> Rejection:
        assert self.signal is not None
        seconds = self.signal.retry_after_s()
        marks = self.signal.state
        return Rejection(
            status,
            f"{reason} (lag {self.signal.lag} records, resumes below {marks.low}); "
            f"retry after {retry_after(seconds)} s",
            headers={"Retry-After": retry_after(seconds)},
        )
