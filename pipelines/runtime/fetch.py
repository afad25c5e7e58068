"""The fetch long-poll of a batching app's consumer.

Faust hard-codes aiokafka's `fetch_max_wait_ms` at 1,500 ms. aiokafka keeps one fetch in
flight per broker, covering only the partitions with nothing buffered; a partition whose
buffer the stream empties meanwhile waits for that fetch to return, which happens when
data reaches one of *its* partitions or after the wait. A stage that sends few, batched
records (the order stage: one stock request per SKU partition and batch) found that wait
to be the full 1.5 s, several times on an order's way, so it caps it for its app.

The same fetcher stops fetching from a broker altogether while any partition it leads has
fetched records nobody has taken yet, for up to its `prefetch_backoff` (100 ms): one
partition Faust is not reading at that moment holds back every other partition on that
broker. On a single broker that set the pace of a fresh order stage: every hop of the
stock round trip waited about 100 ms, for the first second of orders (two workers at
100 orders/s, first 300 orders: p99 308 ms, max 332 ms). A batching app waits
`PREFETCH_BACKOFF_S` instead (p99 159-176 ms, max 176-192 ms, in the same runs).
"""

from __future__ import annotations

from typing import Any

import faust

FETCH_WAIT_MS = 20  # the order app's longest fetch long-poll (Faust: 1,500)
PREFETCH_BACKOFF_S = 0.005  # how long untaken records may hold back a broker's fetch (0.1)


def fetcher_of(app: faust.App) -> Any:
    """The aiokafka fetcher behind the app's consumer thread, once it runs (else None)."""
    thread = getattr(app.consumer, "_thread", None)
    return getattr(getattr(thread, "_consumer", None), "_fetcher", None)


def short_fetch_waits(
    app: faust.App, wait_ms: int = FETCH_WAIT_MS, backoff_s: float = PREFETCH_BACKOFF_S
) -> None:
    """Cap the app's fetch long-poll at `wait_ms`, and the hold of untaken records on the
    next fetch at `backoff_s`, from its first assignment on (the fetcher exists only once
    the consumer runs; the runtime's fingerprint of aiokafka's `Fetcher.__init__` says
    when the attributes set here change)."""

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def cap_fetch_wait(_app: Any, *_args: Any, signal: Any, **_: Any) -> None:
        fetcher = fetcher_of(app)
        if fetcher is not None and hasattr(fetcher, "_fetch_max_wait_ms"):
            fetcher._fetch_max_wait_ms = wait_ms
        if fetcher is not None and hasattr(fetcher, "_prefetch_backoff"):
            fetcher._prefetch_backoff = backoff_s
