"""The fetch long-poll of a batching app's consumer.

Faust hard-codes aiokafka's `fetch_max_wait_ms` at 1,500 ms. aiokafka keeps one fetch in
flight per broker, covering only the partitions with nothing buffered; a partition whose
buffer the stream empties meanwhile waits for that fetch to return, which happens when
data reaches one of *its* partitions or after the wait. A stage that sends few, batched
records (the order stage: one stock request per SKU partition and batch) found that wait
to be the full 1.5 s, several times on an order's way, so it caps it for its app.
"""

from __future__ import annotations

from typing import Any

import faust

FETCH_WAIT_MS = 20  # the order app's longest fetch long-poll (Faust: 1,500)


def fetcher_of(app: faust.App) -> Any:
    """The aiokafka fetcher behind the app's consumer thread, once it runs (else None)."""
    thread = getattr(app.consumer, "_thread", None)
    return getattr(getattr(thread, "_consumer", None), "_fetcher", None)


def short_fetch_waits(app: faust.App, wait_ms: int = FETCH_WAIT_MS) -> None:
    """Cap the app's fetch long-poll at `wait_ms` from its first assignment on (the fetcher
    exists only once the consumer runs; the runtime's fingerprint of aiokafka's
    `Fetcher.__init__` says when the attribute set here changes)."""

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def cap_fetch_wait(_app: Any, *_args: Any, signal: Any, **_: Any) -> None:
        fetcher = fetcher_of(app)
        if fetcher is not None and hasattr(fetcher, "_fetch_max_wait_ms"):
            fetcher._fetch_max_wait_ms = wait_ms
