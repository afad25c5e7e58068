"""The analytics stage's bookkeeping of its window partials: what to publish, when.

The `partials` agent keeps, per source partition and window, a partial aggregate in a
table; this book decides which of them go out on the internal partials topic and when
each may be forgotten, without touching Kafka or Faust (the stage does the I/O):

* a partial changed since the last publication is *dirty* and is published on the next
  tick (one message per partial, however many events changed it);
* when its window closes (its end plus the allowed lateness) a partial is published once
  more, so the merge sees it even if nothing changed after the close;
* an hour after its window closed, a partial is dropped from the table, a few per event
  (`expired`'s budget) so that no event pays for a large sweep;
* a worker that starts with partials restored from the changelog publishes them all once
  (`resend`): the merge may have missed the last ones before a crash;
* a merged window is published only when its record differs from the last one sent
  (`first_sight`).

Partial keys are `<window key>#<source partition>`; a window key is
`<metric>|<dimension>|<start ms>` (`windows.Contribution.window_key`).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterable
from typing import Any

from pipelines.stages import windows

FORGET_AFTER_MS = 3600_000  # a partial is dropped this long after its window closed
EXPIRE_BUDGET = 8  # partials dropped at most per call of `expired` (per event)
CLOSED = 2**62  # "closes" of a partial published at its close: only changes publish it again

PartialMessage = dict[str, Any]  # {"window_key", "size_ms", "partition", "partial"}


def partial_key(window_key: str, partition: int) -> str:
    """The key of a source partition's partial of a window (table and book)."""
    return f"{window_key}#{partition}"


def split_partial_key(key: str) -> tuple[str, int]:
    """(window key, source partition) of a partial key."""
    window_key, partition = key.rsplit("#", 1)
    return window_key, int(partition)


def window_start_ms(window_key: str) -> int:
    return int(window_key.rsplit("|", 1)[1])


def window_metric(window_key: str) -> str:
    return window_key.split("|", 1)[0]


class PartialBook:
    """Dirty partials, when each partial's window closes and expires, and the last merged
    record published per window: all the state the analytics stage keeps outside its
    tables, owned by one app (two apps, two books)."""

    def __init__(self, config: windows.WindowConfig) -> None:
        self.config = config
        self.resent = False  # restored partials republished (once, on the first tick)
        self._dirty: dict[str, PartialMessage] = {}  # partial key -> message to publish
        self._closing: dict[str, int] = {}  # partial key -> when its window closes (ms)
        self._expiry: dict[int, collections.deque[tuple[int, bytes]]] = collections.defaultdict(
            collections.deque
        )  # source partition -> (forget at ms, partial key), in marking order
        self._published: dict[str, str] = {}  # window key -> last record published

    def mark(
        self, key: str, window_key: str, size_ms: int, partition: int, partial: windows.Partial
    ) -> None:
        """`partial` changed: publish it on the next tick; schedule its close and expiry
        the first time it is seen (again: after it expired)."""
        self._dirty[key] = {
            "window_key": window_key,
            "size_ms": size_ms,
            "partition": partition,
            "partial": partial,
        }
        if key not in self._closing:
            closes = window_start_ms(window_key) + size_ms + self.config.lateness_s * 1000
            self._closing[key] = closes
            self._expiry[partition].append((closes + FORGET_AFTER_MS, key.encode()))

    def expired(self, partition: int, now_ms: int, budget: int = EXPIRE_BUDGET) -> list[bytes]:
        """The keys (as stored) of `partition`'s partials to forget now, at most `budget`
        of them, oldest first; the book forgets their close. The caller drops them."""
        queue, out = self._expiry[partition], []
        while queue and budget and queue[0][0] < now_ms:
            _at, key = queue.popleft()
            self._closing.pop(key.decode(), None)
            out.append(key)
            budget -= 1
        return out

    def resend(self, stored: Iterable[tuple[bytes, windows.Partial]]) -> None:
        """Mark every stored partial (key as stored, partial) dirty, once per book."""
        self.resent = True
        for raw, partial in stored:
            key = raw.decode()
            window_key, partition = split_partial_key(key)
            size_ms = windows.window_size_ms(window_metric(window_key), self.config)
            self.mark(key, window_key, size_ms, partition, partial)

    def close_due(self, now_ms: int, lookup: Callable[[str], windows.Partial | None]) -> None:
        """Mark dirty, once, each partial whose window has closed by `now_ms` and that is
        not dirty anyway; `lookup` gives its current value (None: forgotten meanwhile)."""
        for key, closes in list(self._closing.items()):
            if closes <= now_ms and key not in self._dirty:
                partial = lookup(key)
                if partial is not None:
                    window_key, partition = split_partial_key(key)
                    self._dirty[key] = {
                        "window_key": window_key,
                        "partition": partition,
                        "size_ms": windows.window_size_ms(window_metric(window_key), self.config),
                        "partial": partial,
                    }
                self._closing[key] = CLOSED

    def take_dirty(self) -> list[PartialMessage]:
        """The messages to publish now (and none of them again until marked again)."""
        batch = list(self._dirty.values())
        self._dirty.clear()
        return batch

    def first_sight(self, window_key: str, record: dict[str, Any]) -> bool:
        """True if `record` differs from the last one published for its window (which it
        now is: the caller publishes it)."""
        fingerprint = json.dumps(record, sort_keys=True)
        if self._published.get(window_key) == fingerprint:
            return False
        self._published[window_key] = fingerprint
        return True
