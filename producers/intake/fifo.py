"""A large map in first-insertion order whose every operation costs O(1), never O(n).

The intake keeps one idempotency key and one status per recent order (500,000 of each
by default). In one `dict` or `OrderedDict` that size, the insert that crosses a resize
boundary copies the whole table on the event loop: measured at 6, 12 and 40 ms for an
`OrderedDict` of 87,000, 175,000 and 350,000 entries, and again whenever deletions at
the front force a compaction once full. Under the benchmark's open loop those inserts
showed up as 16 ms callbacks, every request queued behind them paying the stall.

`FifoMap` spreads the keys over `SHARDS` small dicts (a resize moves a 64th of the
entries) and keeps the order in a `deque`, which grows by linked blocks and never
copies. An update keeps a key's place: the order is that of first insertion, which is
what both stores evict by (the oldest order, the oldest key).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

V = TypeVar("V")

#: Shards of the index (a power of two): a resize copies at most 1/SHARDS of the map.
SHARDS = 64
#: The value of a key removed out of order; its slot goes when it reaches the front.
_GONE: Any = object()


class FifoMap(Generic[V]):
    """Key -> value, oldest (first inserted) first; every key holds one slot in the order.

    `len()` counts the keys present; `slots` also counts keys removed out of order
    (`pop`) whose slot has not reached the front yet. Bound the map by `slots`: that is
    what it holds in memory.
    """

    __slots__ = ("_len", "_order", "_shards")

    def __init__(self) -> None:
        self._shards: list[dict[str, Any]] = [{} for _ in range(SHARDS)]
        self._order: deque[str] = deque()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    @property
    def slots(self) -> int:
        return len(self._order)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def get(self, key: str) -> V | None:
        value = self._shards[hash(key) & (SHARDS - 1)].get(key)
        return None if value is _GONE else value

    def put(self, key: str, value: V) -> None:
        """Set `key`; a new key goes to the back, a known one keeps its place."""
        shard = self._shards[hash(key) & (SHARDS - 1)]
        old = shard.get(key, None)
        if old is None:
            self._order.append(key)
        if old is None or old is _GONE:
            self._len += 1
        shard[key] = value

    def pop(self, key: str) -> V | None:
        """Remove `key` wherever it is; its slot stays until it reaches the front."""
        shard = self._shards[hash(key) & (SHARDS - 1)]
        value = shard.get(key)
        if value is None or value is _GONE:
            return None
        shard[key] = _GONE
        self._len -= 1
        return value  # type: ignore[no-any-return]

    def oldest(self) -> tuple[str, V] | None:
        """The first inserted key still present, and its value."""
        order = self._order
        while order:
            key = order[0]
            value = self._shards[hash(key) & (SHARDS - 1)][key]
            if value is not _GONE:
                return key, value
            self.popleft()
        return None

    def popleft(self) -> None:
        """Free the front slot: the oldest key, or one already removed (nothing if empty)."""
        if self._order:
            key = self._order.popleft()
            if self._shards[hash(key) & (SHARDS - 1)].pop(key) is not _GONE:
                self._len -= 1

    def keys(self) -> Iterator[str]:
        """Keys present, oldest first (walks the whole map: tests and diagnostics)."""
        return (key for key in self._order if self.get(key) is not None)
