"""Small, bounded statistics for long runs: latency quantiles without keeping every sample.

A producer may send hundreds of millions of records; keeping every delivery latency
would make memory grow with the input. A fixed-size uniform reservoir (Vitter's
algorithm R) keeps quantiles honest to within sampling error at constant memory.
"""

from __future__ import annotations

import math
import random


class Reservoir:
    """A uniform sample of at most `capacity` values from an unbounded stream."""

    def __init__(self, capacity: int = 100_000, seed: int = 0) -> None:
        self.capacity = capacity
        self.count = 0
        self._values: list[float] = []
        self._rng = random.Random(seed)
        self._sorted: list[float] | None = None

    def add(self, value: float) -> None:
        self.count += 1
        self._sorted = None
        if len(self._values) < self.capacity:
            self._values.append(value)
            return
        slot = self._rng.randrange(self.count)
        if slot < self.capacity:
            self._values[slot] = value

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1) by nearest rank, or None when nothing was added."""
        if not self._values:
            return None
        if self._sorted is None:
            self._sorted = sorted(self._values)
        rank = max(1, math.ceil(q * len(self._sorted)))
        return self._sorted[rank - 1]

    def __len__(self) -> int:
        return len(self._values)


def rounded(value: float | None, digits: int = 2) -> float | None:
    """Round for reports, passing None through."""
    return None if value is None else round(value, digits)
