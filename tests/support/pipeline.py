"""Helpers for end-to-end tests: stage workers as processes, and reading the outcome back."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from consumers.tail import StartAt, read
from pipelines import domain, lag
from pipelines.catalog import APP_IDS, STOCK_REQUESTS, STOCK_RESULTS
from pipelines.runner import Fleet
from pipelines.settings import Settings
from pipelines.topology import STAGES, group_inputs


@contextmanager
def workers(settings: Settings, logs: Path) -> Iterator[Fleet]:
    """Stage workers for one test, all stopped when it ends."""
    fleet = Fleet(settings, logs)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def outcomes(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every terminal event so far, by order id (a list, so duplicates would show)."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for topic in ("orders.confirmed", "orders.rejected"):
        for row in read(settings, topic, StartAt("beginning")):
            assert "error" not in row, row
            found[row["value"]["order_id"]].append({"topic": topic, **row["value"]})
    return found


def wait_for_outcomes(
    settings: Settings, order_ids: set[str], timeout: float, workers_: Fleet | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Poll until every order id has a terminal event; fail with the worker logs if not."""
    deadline = time.monotonic() + timeout
    found: dict[str, list[dict[str, Any]]] = {}
    while time.monotonic() < deadline:
        found = outcomes(settings)
        if order_ids <= found.keys():
            return found
        time.sleep(1.0)
    missing = sorted(order_ids - found.keys())
    tails = ""
    if workers_ is not None:
        tails = "\n".join(f"--- {w.name}\n{w.output()[-3000:]}" for w in workers_.workers)
    trail = _trail(settings, set(missing[:5]))
    raise AssertionError(
        f"{len(missing)} orders without outcome, e.g. {missing[:5]}\n{trail}\n{tails}"
    )


def _trail(settings: Settings, order_ids: set[str]) -> str:
    """Where some stuck orders got to: their records on the order stage's topics."""
    lines = []
    batched = (settings.topic(STOCK_REQUESTS), settings.topic(STOCK_RESULTS))
    for topic in ("orders.placed", "orders.status", *batched):
        for row in read(settings, topic, StartAt("beginning")):
            value = row.get("value") or {}
            for entry in value.get("requests") or value.get("results") or [value]:
                if entry.get("order_id") in order_ids or row.get("key") in order_ids:
                    brief = {
                        k: v
                        for k, v in entry.items()
                        if k in ("status", "lines", "action", "outcome")
                    }
                    where = f"{topic}[{row['partition']}]@{row['offset']}"
                    lines.append(f"{where} {row['key']} {brief}")
    return "\n".join(lines)


#: Every topic each stage's group consumes, catalog and internal (from the topology).
STAGE_INPUTS = {s.name: group_inputs(s.name) for s in STAGES if s.app_id}


def wait_for_idle(settings: Settings, stage: str, timeout: float = 60.0) -> None:
    """Wait until the stage's group has committed everything on its input topics."""
    group = settings.group(APP_IDS[stage])
    inputs = [settings.topic(t) for t in STAGE_INPUTS[stage]]
    deadline = time.monotonic() + timeout
    rows: list[lag.PartitionLag] = []
    while time.monotonic() < deadline:
        rows = lag.group_lag(settings, group, inputs)
        if rows and lag.total(rows) == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"group {group} still lags: {[r for r in rows if r.lag]}")


def stock_history(settings: Settings) -> tuple[dict[str, int], list[int]]:
    """Final stock per SKU, and every stock level ever written, from the inventory changelog.

    Each stock decision carries the levels it set, with each SKU's version; a SKU's final
    level is that of its highest version. (`stock:<sku>` records are the layout from
    before decisions carried levels.)"""
    topic = settings.topic(f"{APP_IDS['orders']}-inventory-changelog")
    consumer = Consumer(
        settings.confluent(
            **{
                "group.id": f"check-{time.time_ns()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    final: dict[str, int] = {}
    versions: dict[str, int] = {}
    levels: list[int] = []
    for key, value in _raw_rows(consumer, topic):
        if value is None:
            continue
        record = json.loads(value)
        if key.startswith(b"stock:"):
            set_ = {key.decode()[6:]: (0, record["available"])}
        else:
            set_ = {sku: tuple(pair) for sku, pair in (record.get("levels") or {}).items()}
        for sku, (version, available) in set_.items():
            levels.append(int(available))
            if int(version) >= versions.get(sku, -1):
                versions[sku], final[sku] = int(version), int(available)
    return final, levels


def _raw_rows(consumer: Consumer, topic: str) -> Iterator[tuple[bytes, bytes | None]]:
    from confluent_kafka import TopicPartition

    metadata = consumer.list_topics(topic, timeout=10)
    partitions = list(metadata.topics[topic].partitions)
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in partitions
    }
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    done = {p for p, end in ends.items() if end == 0}
    try:
        while len(done) < len(partitions):
            for msg in consumer.consume(1000, timeout=1.0):
                if msg.error() is not None:
                    continue
                yield msg.key() or b"", msg.value()
                if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                    done.add(msg.partition() or 0)
    finally:
        consumer.close()


def notification_results(settings: Settings, expected: int, timeout: float) -> dict[str, int]:
    """Results per notification id, once there is one for each of `expected` ids."""
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = {}
        for row in read(settings, "notifications.results", StartAt("beginning")):
            counts[row["key"]] = counts.get(row["key"], 0) + 1
        if len(counts) >= expected:
            return counts
        time.sleep(2)
    raise AssertionError(f"{len(counts)} of {expected} notifications have a result")


def confirmed_quantities(found: dict[str, list[dict[str, Any]]]) -> Counter[str]:
    """Units per SKU of every confirmed order."""
    units: Counter[str] = Counter()
    for events in found.values():
        for event in events:
            if event["topic"] == "orders.confirmed":
                for line in event["lines"]:
                    units[line["sku"]] += line["quantity"]
    return units


def check_invariants(
    settings: Settings, found: dict[str, list[dict[str, Any]]], ids: set[str], skus: int
) -> None:
    """Invariants 1 and 2: one terminal event per order in `ids`; stock (of the first
    `skus` SKUs) never negative, and initial minus final stock = the confirmed quantity."""
    assert ids <= found.keys()
    doubles = {oid: events for oid, events in found.items() if len(events) != 1}
    assert not doubles, f"{len(doubles)} orders with more than one terminal event"
    wait_for_idle(settings, "orders")
    final, levels = stock_history(settings)
    assert min(levels) >= 0
    confirmed = confirmed_quantities(found)
    for index in range(skus):
        sku = domain.sku_code(index)
        assert domain.initial_stock(sku) - final[sku] == confirmed[sku], sku


def live_windows(settings: Settings) -> dict[str, dict[str, Any]]:
    """The latest value of every window in analytics.windows, by window key."""
    latest: dict[str, dict[str, Any]] = {}
    for row in read(settings, "analytics.windows", StartAt("beginning")):
        latest[row["value"]["window_key"]] = row["value"]
    return latest


def settled_windows(settings: Settings, timeout: float = 90) -> dict[str, dict[str, Any]]:
    """analytics.windows once it stops changing (every window closed and published)."""
    deadline = time.monotonic() + timeout
    previous = live_windows(settings)
    while time.monotonic() < deadline:
        time.sleep(4)
        current = live_windows(settings)
        if current and current == previous:
            return current
        previous = current
    raise AssertionError("analytics.windows kept changing")
