"""A provider's rate limit, shared by every worker of the consumer group.

Providers limit the account, not the process, so the group as a whole must stay under
the limit however many workers run. Each worker runs a token bucket at its share of the
group rate, proportional to the partitions it owns (`worker_share`); the notifications
app resets the bucket's rate on every rebalance, so the shares always add up to the
group's limit without any coordination beyond what Kafka's assignment already gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Token shortfalls below this count as none: float rounding must not cause a wait that
#: is too short to move the clock (which would spin forever).
_EPSILON = 1e-9


def worker_share(group_rate: float, owned_partitions: int, total_partitions: int) -> float:
    """This worker's rate: `group_rate * owned / total`, 0 when it owns no partition."""
    if group_rate < 0:
        raise ValueError(f"a rate cannot be negative, got {group_rate}")
    if total_partitions < 1 or not 0 <= owned_partitions <= total_partitions:
        raise ValueError(f"cannot own {owned_partitions} of {total_partitions} partitions")
    if owned_partitions == 0:
        return 0.0
    return group_rate * owned_partitions / total_partitions


class TokenBucket:
    """At most `rate` acquisitions a second on average, and `burst` back to back.

    Waiters queue in arrival order (one lock), so a steady stream cannot starve an
    early caller. `set_rate` takes effect at once, including for a caller already
    waiting: it wakes and recomputes its wait. A rate of 0 blocks until the rate rises,
    which is what a worker owning no partitions should do. `clock` and `sleep` are
    injectable so tests can run hours of traffic on a fake clock in microseconds.
    """

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must allow at least one token, got {burst}")
        self._check_rate(rate)
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = burst
        self._updated = clock()
        self._lock = asyncio.Lock()
        self._rate_changed = asyncio.Event()

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self._rate

    @property
    def burst(self) -> float:
        """The most tokens the bucket holds, i.e. the longest back-to-back run."""
        return self._burst

    def set_rate(self, rate: float) -> None:
        """Change the rate from now on; tokens earned so far at the old rate are kept."""
        self._check_rate(rate)
        self._refill()
        self._rate = rate
        self._rate_changed.set()

    def available(self) -> float:
        """Tokens in the bucket right now."""
        self._refill()
        return self._tokens

    async def acquire(self, tokens: float = 1.0) -> None:
        """Wait until `tokens` are available, then take them."""
        if not 0 < tokens <= self._burst:
            raise ValueError(f"can take 0 < tokens <= burst ({self._burst}), asked {tokens}")
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= tokens - _EPSILON:
                    self._tokens = max(0.0, self._tokens - tokens)
                    return
                wait = (tokens - self._tokens) / self._rate if self._rate > 0 else None
                await self._wait(wait)

    async def _wait(self, seconds: float | None) -> None:
        """Sleep `seconds` (None: indefinitely), or until `set_rate` changes the rate."""
        self._rate_changed.clear()
        changed = asyncio.ensure_future(self._rate_changed.wait())
        waiters: set[asyncio.Future[Any]] = {changed}
        if seconds is not None:
            waiters.add(asyncio.ensure_future(self._sleep(seconds)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)

    @staticmethod
    def _check_rate(rate: float) -> None:
        if rate < 0:
            raise ValueError(f"a rate cannot be negative, got {rate}")
