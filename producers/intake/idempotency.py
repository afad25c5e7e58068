"""Idempotency keys: which order each recent key produced, and which keys are in flight.

Where keys live: in this process's memory, a bounded map (`idempotency_max_keys`, the
oldest forgotten first) of keys seen within `idempotency_window_s` (24 h by default),
whichever is shorter. They are not lost on restart because every order the intake
publishes carries its key in OrderPlaced v2's `client_ref` and the digest of its content
in the `sluice.intake.fingerprint` header: at start the intake re-reads `orders.placed`
from (now - window) to its end and learns the keys again before it listens (see
`producers.intake.recovery`).

Concurrent duplicates are coalesced per key: while the first request's attempt runs,
every duplicate waits for its outcome, so one key publishes at most once even when a
client fires its retry before the first answer arrives. A key is recorded as *pending*
(with its record) just before the record is produced, and as done once acknowledged: if
the attempt dies in between, a retry republishes the same record with the same order id,
which the order stage deduplicates, rather than making a second order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from producers.intake.fifo import FifoMap
from producers.intake.validation import Rejection

T = TypeVar("T")

FINGERPRINT_HEADER = "sluice.intake.fingerprint"
#: Most expired keys one lookup forgets: a slice per request, never a day's burst at once.
PRUNE_BATCH = 64


class KeyEntry(NamedTuple):
    """What a key produced: its order id, the content digest, and when it was accepted.

    `pending` holds the record of an
    attempt not (yet) acknowledged, so a retry republishes the very same order (same id),
    which the order stage deduplicates should the earlier attempt have landed after all.
    A named tuple rather than a frozen dataclass: two are made for every keyed order,
    and a tuple is built in a fraction of the time (immutable all the same).
    """

    order_id: str
    fingerprint: str
    at: float
    pending: Mapping[str, Any] | None = None


class IdempotencyStore:
    """Recent keys (bounded, oldest first out, with an age limit) and the attempts in flight.

    Two costs of a store this size are kept off the event loop's tail: no single insert
    copies the whole table (`FifoMap`), and an acknowledged key is held as one string
    (`_pack`), not as a tuple the cyclic garbage collector would track: with a tuple per
    key, the young collections of a serving intake were 95% store entries and took 12 to
    25 ms each, a stall every request in flight waited out.
    """

    def __init__(
        self, window_s: float, max_keys: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._entries: FifoMap[KeyEntry | str] = FifoMap()
        self._inflight: dict[str, Flight] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> KeyEntry | None:
        """The entry of `key` if it is still within the window."""
        self.prune()
        packed = self._entries.get(key)
        if packed is None:
            return None
        entry = _unpack(packed)
        # re-read keys arrive interleaved by partition, so one behind the front may be old
        if entry.at < self._clock() - self.window_s:
            return None
        return entry

    def remember(self, key: str, entry: KeyEntry) -> None:
        """Record what `key` produced; keys are forgotten in the order they were first seen.

        A key keeps its place when remembered again (pending, then acknowledged, or a
        retry of a pending key), so the order costs nothing per update.
        """
        self._entries.put(key, _pack(entry))
        while self._entries.slots > self.max_keys:
            self._entries.popleft()

    def learn(self, key: str, entry: KeyEntry) -> bool:
        """Remember a key re-read from the topic, unless it is already too old."""
        if entry.at < self._clock() - self.window_s:
            return False
        self.remember(key, entry)
        return True

    def prune(self, limit: int = PRUNE_BATCH) -> None:
        """Forget up to `limit` keys older than the window (kept in acceptance order).

        Bounded so that a burst of keys from a day ago is forgotten a slice per request
        rather than all within one request; `get` checks the age itself meanwhile.
        """
        horizon = self._clock() - self.window_s
        for _ in range(limit):
            oldest = self._entries.oldest()
            if oldest is None or _packed_at(oldest[1]) >= horizon:
                return
            self._entries.popleft()

    def in_flight(self, key: str) -> Flight | None:
        """The attempt with `key` still running, if any."""
        return self._inflight.get(key)

    async def single_flight(self, key: str, fp: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` for `key` here and now; duplicates arriving meanwhile `join` it.

        No task is spawned for the common case of no duplicate: the attempt runs in the
        caller's coroutine and its outcome is handed to any waiters when it ends.
        """
        flight = self._inflight[key] = Flight(fp)
        try:
            outcome = await attempt()
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else _interrupted()
            for waiter in flight.waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            raise
        finally:
            del self._inflight[key]
        for waiter in flight.waiters:
            if not waiter.done():
                waiter.set_result(outcome)
        return outcome

    @staticmethod
    async def join(flight: Flight) -> Any:
        """Wait for a running attempt's outcome (or its exception)."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        flight.waiters.append(waiter)
        return await waiter


def _pack(entry: KeyEntry) -> KeyEntry | str:
    """An acknowledged entry as one string ("at NUL fingerprint NUL order id").

    A string holds no references, so the collector never tracks it; a pending entry
    (it holds its record) or one whose fingerprint has a NUL stays a KeyEntry.
    """
    if entry.pending is not None or "\x00" in entry.fingerprint:
        return entry
    return f"{entry.at!r}\x00{entry.fingerprint}\x00{entry.order_id}"


def _unpack(packed: KeyEntry | str) -> KeyEntry:
    if not isinstance(packed, str):
        return packed
    at, fingerprint, order_id = packed.split("\x00", 2)
    return KeyEntry(order_id, fingerprint, float(at))


def _packed_at(packed: KeyEntry | str) -> float:
    if not isinstance(packed, str):
        return packed.at
    return float(packed[: packed.index("\x00")])


def _interrupted() -> Rejection:
    return Rejection(
        503, "the first request with this Idempotency-Key was interrupted; retry with the same key"
    )


@dataclass
class Flight:
    """An attempt in progress for one key: its content digest and who waits for it."""

    fingerprint: str
    waiters: list[asyncio.Future[Any]] = field(default_factory=list)
