"""Event-time window aggregation, shared by the live analytics stage and `sluice replay`.

Determinism is the design goal: replaying a range must give exactly the windows the live
stage produced, whatever the partition interleaving, worker count or restarts. So:

* every aggregate is order-independent (counts, sums, per-SKU quantities, latency
  histograms with fixed buckets), so any arrival order gives the same value;
* whether a record is *late* is a property of the record alone: its Kafka timestamp
  minus its event time exceeds the allowed lateness. Late records are counted in the
  window's `late_events` and left out of its values, in live and in replay alike;
* each source partition keeps its own partial per window (with the last offset it
  applied per topic, so a redelivered record is not counted twice), and a window is the
  merge of its partials, which replaces a partition's partial rather than adding it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.eventtime import event_time_problem
from pipelines.topology import stage

Partial = dict[str, Any]  # {"count", "sum", "top": {k: n}, "hist": {b: n}, "late"}


class WindowConfig(BaseModel):
    """Window sizes and lateness (settings `SLUICE_ANALYTICS__*`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tumbling_s: int = Field(60, ge=1, description="Size of the tumbling windows.")
    hopping_s: int = Field(3600, ge=1, description="Size of the hopping revenue windows.")
    hop_s: int = Field(900, ge=1, description="How far each hopping window advances.")
    lateness_s: int = Field(30, ge=0, description="Allowed lateness: Kafka time - event time.")
    top_n: int = Field(5, ge=1, le=100, description="How many SKUs the top list keeps.")

    @model_validator(mode="after")
    def _hops_divide(self) -> WindowConfig:
        if self.hopping_s % self.hop_s:
            raise ValueError("analytics hopping_s must be a multiple of hop_s")
        return self


@dataclass(slots=True)
class Contribution:
    """What one record adds to one metric of one window (built on the hot path: slots)."""

    metric: str
    dimension: str
    start_ms: int
    size_ms: int
    count: int = 1
    total: int = 0
    top: tuple[tuple[str, int], ...] = ()
    latency_ms: int | None = None
    window_key: str = ""

    def __post_init__(self) -> None:
        self.window_key = f"{self.metric}|{self.dimension}|{self.start_ms}"


EVENT_TIME = {
    "orders.placed": "placed_at",
    "orders.confirmed": "confirmed_at",
    "orders.rejected": "rejected_at",
    "notifications.results": "completed_at",
}
#: The analytics stage's inputs (as the topology declares them; each has an EVENT_TIME).
SOURCES = stage("analytics").inputs


def unusable_time(topic: str, record: Mapping[str, Any]) -> str | None:
    """Why `record` cannot be put in a window (an event time out of range), or None.

    The live stage dead-letters such a record and `sluice replay` skips it, with the same
    test, so replay still equals live. A notification result's `requested_at` is checked
    too: its send latency (completion minus request) is summed into a window.
    """
    field = EVENT_TIME[topic]
    problem = event_time_problem(field, record[field])
    if problem is None and topic == "notifications.results":
        problem = event_time_problem("requested_at", record["requested_at"])
    return problem


def contributions(
    topic: str, record: Mapping[str, Any], config: WindowConfig
) -> list[Contribution]:
    """Every window metric a decoded record adds to (its event time decides the windows)."""
    at = int(record[EVENT_TIME[topic]])
    minute = _tumbling(at, config.tumbling_s * 1000)
    if topic == "orders.placed":
        quantities: dict[str, int] = {}
        for line in record["lines"]:
            quantities[line["sku"]] = quantities.get(line["sku"], 0) + int(line["quantity"])
        return [
            Contribution("orders_placed", "all", *minute),
            Contribution(
                "top_skus",
                "all",
                *minute,
                count=len(record["lines"]),
                total=sum(quantities.values()),
                top=tuple(quantities.items()),
            ),
        ]
    if topic == "orders.confirmed":
        currency, cents = record["currency"], int(record["total_cents"])
        hourly = [
            Contribution("revenue_1h", currency, start, config.hopping_s * 1000, total=cents)
            for start in _hopping(at, config)
        ]
        return [
            Contribution("orders_confirmed", "all", *minute),
            Contribution("revenue", currency, *minute, total=cents),
            *hourly,
        ]
    if topic == "orders.rejected":
        return [Contribution("orders_rejected", record["reason"], *minute)]
    channel = record["channel"]
    outcome = "delivered" if record["status"] == "DELIVERED" else "dead_lettered"
    latency = max(0, at - int(record["requested_at"]))
    return [
        Contribution(f"notifications_{outcome}", channel, *minute),
        Contribution("send_latency", channel, *minute, total=latency, latency_ms=latency),
    ]


def _tumbling(at_ms: int, size_ms: int) -> tuple[int, int]:
    return at_ms - at_ms % size_ms, size_ms


def _hopping(at_ms: int, config: WindowConfig) -> list[int]:
    hop, size = config.hop_s * 1000, config.hopping_s * 1000
    last = at_ms - at_ms % hop
    return [start for start in range(last - size + hop, last + 1, hop) if start <= at_ms]


def is_late(record_ts_ms: int, event_ms: int, config: WindowConfig) -> bool:
    """Late: the record reached Kafka more than the allowed lateness after its event time."""
    return record_ts_ms - event_ms > config.lateness_s * 1000


def empty() -> Partial:
    return {"count": 0, "sum": 0, "top": {}, "hist": {}, "late": 0}


def add(partial: Partial, c: Contribution, late: bool) -> Partial:
    """Add one contribution (or one late record) to `partial`, in place; returns it.

    In place because a window's SKU map can hold hundreds of entries and replay adds
    hundreds of thousands of records: copying per record would dominate the run.
    """
    if late:
        partial["late"] += 1
        return partial
    partial["count"] += c.count
    partial["sum"] += c.total
    top = partial["top"]
    for key, value in c.top:
        top[key] = top.get(key, 0) + value
    if c.latency_ms is not None:
        hist, bucket = partial["hist"], str(latency_bucket(c.latency_ms))
        hist[bucket] = hist.get(bucket, 0) + 1
    return partial


def merge(partials: Iterable[Partial]) -> Partial:
    """One window from its partitions' partials (order-independent)."""
    out = empty()
    for p in partials:
        out["count"] += p["count"]
        out["sum"] += p["sum"]
        out["late"] += p["late"]
        for key, value in p["top"].items():
            out["top"][key] = out["top"].get(key, 0) + value
        for bucket, n in p["hist"].items():
            out["hist"][bucket] = out["hist"].get(bucket, 0) + n
    return out


def latency_bucket(ms: int) -> int:
    """Fixed logarithmic buckets, four per power of two: about 19% resolution, any order."""
    return 0 if ms <= 1 else math.ceil(4 * math.log2(ms))


def bucket_upper_ms(bucket: int) -> int:
    return 1 if bucket == 0 else math.ceil(2 ** (bucket / 4))


def percentiles(
    hist: Mapping[str, int],
    qs: tuple[tuple[str, float], ...] = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99)),
) -> dict[str, int]:
    """Percentiles from a bucket histogram, as each bucket's upper bound in ms."""
    total = sum(hist.values())
    if not total:
        return {}
    ordered = sorted((int(b), n) for b, n in hist.items())
    out = {}
    for name, q in qs:
        rank, seen = max(1, math.ceil(q * total)), 0
        for bucket, n in ordered:
            seen += n
            if seen >= rank:
                out[name] = bucket_upper_ms(bucket)
                break
    return out


def record(window_key: str, size_ms: int, value: Partial, top_n: int) -> dict[str, Any]:
    """A WindowAggregate record (schemas/WindowAggregate.v1.avsc) for a merged window."""
    metric, dimension, start = window_key.split("|")
    top = sorted(value["top"].items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]
    return {
        "window_key": window_key,
        "metric": metric,
        "dimension": dimension,
        "window_start": int(start),
        "window_end": int(start) + size_ms,
        "count": value["count"],
        "sum": value["sum"],
        "top": [{"key": k, "value": v} for k, v in top],
        "percentiles": percentiles(value["hist"]) if value["hist"] else {},
        "late_events": value["late"],
    }


def window_size_ms(metric: str, config: WindowConfig) -> int:
    return (config.hopping_s if metric == "revenue_1h" else config.tumbling_s) * 1000
