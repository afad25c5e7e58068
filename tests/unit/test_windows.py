"""The window aggregation is order-independent and counts lateness by the record alone."""

from __future__ import annotations

import random

from consumers.replay import Aggregator
from pipelines.stages import windows
from pipelines.stages.windows import WindowConfig

CFG = WindowConfig(tumbling_s=60, hopping_s=3600, hop_s=900, lateness_s=30, top_n=2)
T = 1_800_000_000_000 - 1_800_000_000_000 % 3_600_000  # an hour boundary


def _placed(i: int, at: int) -> dict:
    return {
        "order_id": f"O-{i}",
        "placed_at": at,
        "lines": [{"sku": f"SKU-{i % 3:05d}", "quantity": 1 + i % 2, "unit_price_cents": 1}],
    }


def _confirmed(i: int, at: int, currency: str = "EUR") -> dict:
    return {"order_id": f"O-{i}", "confirmed_at": at, "currency": currency, "total_cents": 100 * i}


def _events() -> list[tuple[str, dict, int]]:
    out = []
    for i in range(200):
        at = T + i * 1000
        out.append(("orders.placed", _placed(i, at), at + 5))
        out.append(
            ("orders.confirmed", _confirmed(i, at + 500, "EUR" if i % 2 else "USD"), at + 600)
        )
        if i % 10 == 0:
            out.append(
                (
                    "notifications.results",
                    {
                        "channel": "EMAIL",
                        "status": "DELIVERED" if i % 20 else "DEAD_LETTERED",
                        "requested_at": at,
                        "completed_at": at + 40 * (i + 1),
                    },
                    at + 40 * (i + 1),
                )
            )
    return out


def _aggregate(events: list[tuple[str, dict, int]]) -> list[dict]:
    agg = Aggregator(CFG)
    for topic, record, ts in events:
        agg.apply(topic, record, ts)
    return agg.records()


def test_any_arrival_order_gives_the_same_windows() -> None:
    events = _events()
    expected = _aggregate(events)
    for seed in range(5):
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        assert _aggregate(shuffled) == expected


def test_partials_merged_equal_the_whole() -> None:
    events = _events()
    parts: dict[int, dict[str, windows.Partial]] = {0: {}, 1: {}, 2: {}}
    for n, (topic, record, ts) in enumerate(events):
        late = windows.is_late(ts, record[windows.EVENT_TIME[topic]], CFG)
        for c in windows.contributions(topic, record, CFG):
            bucket = parts[n % 3]
            bucket[c.window_key] = windows.add(bucket.get(c.window_key, windows.empty()), c, late)
    keys = sorted({k for p in parts.values() for k in p})
    merged = [
        windows.record(
            k,
            windows.window_size_ms(k.split("|")[0], CFG),
            windows.merge(p[k] for p in parts.values() if k in p),
            CFG.top_n,
        )
        for k in keys
    ]
    assert merged == _aggregate(events)


def test_counts_revenue_and_top_skus_in_one_minute() -> None:
    records = {r["window_key"]: r for r in _aggregate(_events())}
    first = records[f"orders_placed|all|{T}"]
    assert (first["count"], first["window_end"]) == (60, T + 60_000)
    top = records[f"top_skus|all|{T}"]["top"]
    assert len(top) == 2
    assert top[0]["value"] >= top[1]["value"]
    eur = records[f"revenue|EUR|{T}"]
    assert eur["sum"] == sum(100 * i for i in range(60) if i % 2)


def test_hourly_revenue_hops_every_quarter() -> None:
    c = windows.contributions("orders.confirmed", _confirmed(1, T + 1), CFG)
    hourly = sorted(x.start_ms for x in c if x.metric == "revenue_1h")
    assert hourly == [T - 2_700_000, T - 1_800_000, T - 900_000, T]


def test_late_records_are_counted_not_summed() -> None:
    agg = Aggregator(CFG)
    agg.apply("orders.placed", _placed(1, T), T + 31_000)  # 31 s after its event time
    agg.apply("orders.placed", _placed(2, T + 1), T + 10)
    window = {r["window_key"]: r for r in agg.records()}[f"orders_placed|all|{T}"]
    assert (window["count"], window["late_events"]) == (1, 1)


def test_latency_percentiles_are_bucket_bounds() -> None:
    hist: dict[str, int] = {}
    for ms in (10, 20, 40, 80, 1000):
        b = str(windows.latency_bucket(ms))
        hist[b] = hist.get(b, 0) + 1
    p = windows.percentiles(hist)
    assert p["p50"] >= 40
    assert p["p50"] < 48
    assert p["p99"] >= 1000
    assert p["p99"] < 1200


def test_event_times_no_window_can_hold_are_skipped_and_counted_like_live() -> None:
    agg = Aggregator(CFG)
    for at in (-(2**63), -1, 2**63 - 1):
        assert windows.unusable_time("orders.placed", _placed(1, at)) is not None
        agg.apply("orders.placed", _placed(1, at), T)
    result = {"channel": "SMS", "status": "DELIVERED", "requested_at": -(2**63)}
    problem = windows.unusable_time("notifications.results", {**result, "completed_at": T})
    assert problem is not None
    assert problem.startswith("requested_at: event time")
    agg.apply("notifications.results", {**result, "completed_at": T}, T)
    agg.apply("orders.placed", _placed(2, T), T)
    assert (agg.events, agg.out_of_range) == (1, 4)
    assert [w["window_key"] for w in agg.records()] == [
        f"orders_placed|all|{T}",
        f"top_skus|all|{T}",
    ]
    assert windows.unusable_time("orders.confirmed", _confirmed(1, T)) is None
