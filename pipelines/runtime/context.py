"""Acting for one event outside Faust's own per-event loop.

Faust tables find the partition of every read and write (the RocksDB store's database,
the changelog partition) from the *current event*, a context variable that the stream
iterator sets for the event it just yielded. A stage that folds a batch of events and
writes each touched key once at the end (`stream.take_events`) must say, per key, which
event it is writing for: `acting_for(event)` sets that variable for a block, and
`make_current(event)` until the next event is made current (a batch handled event by
event).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

from faust import streams


@contextlib.contextmanager
def acting_for(event: Any) -> Iterator[None]:
    """Make `event` the current event (tables read and write its partition) in the block."""
    token = streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        streams._current_event.reset(token)


def make_current(event: Any) -> None:
    """Make `event` the task's current event until another is (tables use its partition)."""
    streams._current_event.set(weakref.ref(event))
