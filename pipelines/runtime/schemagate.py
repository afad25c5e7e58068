"""Wait out a schema registry outage instead of dead-lettering valid records.

With Confluent framing a stage needs the registry for every writer schema id it has
not seen and for every output subject it has not registered. A registry that is down
is a fault that passes, so a record must never be dead-lettered for it (only a registry
that answers "no such schema id" makes a record poison), and the registry's blocking
HTTP calls must never run on the event loop (a stalled loop misses heartbeats, timers
and commits). So before a stage decodes a record it asks the gate, which costs a flag
test and a dict lookup; only a record with an unknown schema id, or the stage's first
record (when its output subjects are registered), waits. The wait runs the look-up in a
thread, one at a time per process, and retries with backoff for as long as it takes,
saying so once per `log_every_s` rather than per record.

While a stage waits on purpose, its records are neither processed nor acknowledged, and
the commit guard (`pipelines.runtime.commits`) would take the stalled partitions for
holes and re-read them; the gate tells it to stand by (`commits.outside_wait`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pipelines.runtime import commits
from pipelines.serde import ConfluentSerde, RegistryUnavailable, Serde

log = logging.getLogger(__name__)


class SchemaGate:
    """Makes sure `serde` can decode a record and encode the stage's outputs without I/O.

    `outputs` are the (schema name, physical topic) pairs the stage writes; they are
    registered before the first record is let through.
    """

    def __init__(
        self,
        serde: Serde,
        outputs: list[tuple[str, str]],
        *,
        first_delay_s: float = 0.5,
        max_delay_s: float = 5.0,
        log_every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.serde = serde
        self.outputs = outputs
        self.first_delay_s, self.max_delay_s, self.log_every_s = (
            first_delay_s,
            max_delay_s,
            log_every_s,
        )
        self.clock = clock
        self.cold = bool(outputs) and isinstance(serde, ConfluentSerde)
        self.down_since: float | None = None
        self.failures = 0
        self._logged_at = float("-inf")
        self._lock: asyncio.Lock | None = None
        self._missing = serde.missing_schema
        self._reason = f"schema registry (gate {id(self):x})"  # one stand-by per gate

    def blocked(self, data: bytes | None) -> bool:
        """Whether decoding `data` (or the first output) needs the registry first. Hot path."""
        return self.cold or self._missing(data) is not None

    async def ready(self, data: bytes | None) -> None:
        """Return once `data` decodes without I/O; retries a registry outage for good."""
        delay = self.first_delay_s
        while not await self.try_ready(data):
            await asyncio.sleep(delay)
            delay = min(self.max_delay_s, delay * 2)

    async def try_ready(self, data: bytes | None) -> bool:
        """One attempt (in a thread): True when `data` is decodable without I/O now."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one look-up in flight; the next waiter finds it cached
            if not self.blocked(data):
                return True
            try:
                await asyncio.to_thread(self._fetch, data)
            except RegistryUnavailable as exc:
                self._failed(str(exc))
                return False
        self._recovered()
        return True

    def _fetch(self, data: bytes | None) -> None:
        """Blocking: register the outputs once, then fetch the writer schema of `data`."""
        if self.cold:
            self.serde.prepare(self.outputs)
            self.cold = False
        schema_id = self.serde.missing_schema(data)
        if schema_id is not None:
            self.serde.fetch_schema(schema_id)

    def _failed(self, error: str) -> None:
        now = self.clock()
        if self.down_since is None:
            self.down_since = now
            commits.outside_wait(self._reason, True)
        self.failures += 1
        if now - self._logged_at >= self.log_every_s:
            self._logged_at = now
            log.warning(
                "%s; waiting for it (%d attempts over %.0f s, retrying with backoff up to "
                "%.0f s; no record is dead-lettered for this)",
                error,
                self.failures,
                now - self.down_since,
                self.max_delay_s,
            )

    def _recovered(self) -> None:
        if self.down_since is None:
            return
        log.warning(
            "schema registry answers again after %.0f s and %d failed attempts; resuming",
            self.clock() - self.down_since,
            self.failures,
        )
        self.down_since, self.failures, self._logged_at = None, 0, float("-inf")
        commits.outside_wait(self._reason, False)
