"""Backpressure as a control loop: watch a group's lag, decide pause or resume, with hysteresis.

The signal is consumer-group lag (log-end minus committed offset), read with one batched
admin request per interval. The decision has two marks: above `high` the upstream stops
(pauses partitions, blocks a producer, answers 429), and it starts again only below
`low`, so a lag hovering between the marks never flaps. The same `Hysteresis` drives the
Faust controller, the producers' throttle and the intake API.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipelines import lag
from pipelines.lag import LagReader
from pipelines.settings import BackpressureSettings, Settings
from pipelines.topology import STAGES, downstream_topics, stage


@dataclass
class Hysteresis:
    """Pause above `high`, resume below `low`; `update` returns a transition or None."""

    high: int
    low: int
    paused: bool = False
    transitions: int = 0

    def update(self, observed: int) -> str | None:
        if not self.paused and observed > self.high:
            self.paused = True
        elif self.paused and observed < self.low:
            self.paused = False
        else:
            return None
        self.transitions += 1
        return "pause" if self.paused else "resume"


@dataclass(frozen=True)
class Edge:
    """One watched edge: the downstream group and the topics it consumes (catalog names)."""

    group: str
    topics: Sequence[str]


def edge_of(upstream: str) -> Edge:
    """The edge a stage yields to: the group of the stage it watches, on the topics between."""
    watched = stage(upstream).watches
    group = stage(watched).app_id if watched else None
    if group is None:
        raise ValueError(f"stage {upstream!r} watches no downstream consumer group")
    return Edge(group, downstream_topics(upstream))


#: Upstream stage -> the downstream edge it yields to (from `pipelines.topology`).
EDGES = {s.name: edge_of(s.name) for s in STAGES if s.watches}


@dataclass
class LagSignal:
    """The current lag of an edge, its drain rate, and the hysteresis decision on it."""

    settings: Settings
    edge: Edge
    marks: BackpressureSettings
    state: Hysteresis = field(init=False)
    lag: int = 0
    per_partition: dict[tuple[str, int], int] = field(default_factory=dict)
    _history: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=30))
    _reader: LagReader | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.state = Hysteresis(self.marks.high, self.marks.low)

    def measure(self) -> str | None:
        """Read the lag once (blocking calls); returns a transition, if any."""
        if self._reader is None:
            group = self.settings.group(self.edge.group)
            self._reader = LagReader(self.settings, group, timeout=5.0)
        rows = self._reader.rows([self.settings.topic(t) for t in self.edge.topics])
        self.per_partition = {(r.topic, r.partition): r.lag for r in rows}
        self.lag = lag.total(rows)
        committed = sum(r.committed or 0 for r in rows)
        self._history.append((time.monotonic(), committed))
        return self.state.update(self.lag)

    def close(self) -> None:
        """Release the lag reader's client (a later `measure` opens a new one)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def ameasure(self) -> str | None:
        """`measure` without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, self.measure)

    def drain_rate(self) -> float:
        """Records per second the downstream group committed recently (0 if unknown)."""
        if len(self._history) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._history[0], self._history[-1]
        return max(0.0, (c1 - c0) / (t1 - t0)) if t1 > t0 else 0.0

    def retry_after_s(self, floor: float = 1.0, ceiling: float = 120.0) -> float:
        """How long until the lag should be back under the low mark at the current drain rate."""
        excess = max(0, self.lag - self.marks.low)
        rate = self.drain_rate()
        if rate <= 0:
            return ceiling if excess else floor
        return min(ceiling, max(floor, excess / rate))
