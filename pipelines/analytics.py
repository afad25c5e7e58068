"""The analytics stage: `faust -A pipelines.analytics:app worker` (or `sluice worker analytics`).

Two steps, one consumer group (`sluice-analytics`):

1. `partials` reads orders.placed/confirmed/rejected and notifications.results and keeps,
   per source partition and window, a partial aggregate plus the last offset applied per
   topic (a redelivered record is recognised and not counted twice). Changed partials are
   published, keyed by window, to the internal partials topic.
2. `merge` keeps, per window, the latest partial of every partition (replacing, never
   adding, so republished partials are harmless) and, once the window is closed (its end
   plus the allowed lateness has passed), publishes the merged window to
   analytics.windows, compacted by window key.

The aggregation itself is `pipelines.stages.windows`, the same code `sluice replay` runs.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import faust

from pipelines.catalog import APP_IDS
from pipelines.errors import RecordError
from pipelines.serde import serde_for
from pipelines.stages import windows
from pipelines.stages.analytics_web import WindowView, install_views
from pipelines.stages.faustapp import (
    JSON_STATE,
    RAW,
    DirectSender,
    StageMetrics,
    dlq_headers,
    install_web,
    make_app,
    now_ms,
    record_ref,
    table,
)
from pipelines.stages.startup import stage_settings

log = logging.getLogger(__name__)

settings = stage_settings()  # bad settings: one line, no traceback
config = settings.analytics
serde = serde_for(settings)
metrics = StageMetrics("analytics")
app = make_app("analytics", settings)
sender = DirectSender(app)
SCHEMAS = {
    "orders.placed": "sluice.orders.OrderPlaced",
    "orders.confirmed": "sluice.orders.OrderConfirmed",
    "orders.rejected": "sluice.orders.OrderRejected",
    "notifications.results": "sluice.notifications.NotificationResult",
}
PARTIALS_TOPIC = settings.topic(f"{APP_IDS['analytics']}-partials")

sources = app.topic(*(settings.topic(t) for t in windows.SOURCES), **RAW)
partials_in = app.topic(PARTIALS_TOPIC, partitions=settings.partitions, **RAW)
partials = table(app, "partials", JSON_STATE)
merged = table(app, "merged", JSON_STATE)
view = WindowView(settings)
install_web(app, metrics, {"partials": partials, "merged": merged})
install_views(app, settings, view, merged)

_dirty: dict[str, dict[str, Any]] = {}  # partial key -> message to publish
_closing: dict[str, int] = {}  # partial key -> when its window closes (ms)
_expiry: dict[int, collections.deque[tuple[int, bytes]]] = collections.defaultdict(
    collections.deque
)
_started = {"resent": False}


@app.agent(sources)
async def aggregate(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    """Fold each order and notification event into its partition's window partials."""
    async for event in stream.events():
        topic = settings.logical_topic(event.message.topic)
        metrics.received(topic)
        ref = record_ref(event, topic)
        try:
            record = serde.decode(event.value or b"", SCHEMAS[topic], source=ref)
        except RecordError as exc:
            metrics.dead_letters.labels("analytics", "undecodable").inc()
            await sender.send(
                settings.topic("analytics.dlq"),
                ref.key,
                ref.value or b"",
                dlq_headers(ref, str(exc), "analytics"),
            )
            yield None
            continue
        _fold(topic, record, event.message)
        _expire(ref.partition, partials)
        yield None


def _fold(topic: str, record: dict[str, Any], message: Any) -> None:
    event_ms = int(record[windows.EVENT_TIME[topic]])
    late = windows.is_late(round(message.timestamp * 1000), event_ms, config)
    for c in windows.contributions(topic, record, config):
        key = f"{c.window_key}#{message.partition}"
        entry = partials.get(key.encode()) or {"partial": windows.empty(), "applied": {}}
        if entry["applied"].get(topic, -1) >= message.offset:
            continue  # applied before a crash or rebalance: the partial already has it
        entry = {
            "partial": windows.add(entry["partial"], c, late),
            "applied": {**entry["applied"], topic: message.offset},
        }
        partials[key.encode()] = entry
        _mark(key, c.window_key, c.size_ms, message.partition, entry["partial"])


def _mark(
    key: str, window_key: str, size_ms: int, partition: int, partial: windows.Partial
) -> None:
    start = int(window_key.rsplit("|", 1)[1])
    _dirty[key] = {
        "window_key": window_key,
        "size_ms": size_ms,
        "partition": partition,
        "partial": partial,
    }
    closes = start + size_ms + config.lateness_s * 1000
    if key not in _closing:
        _closing[key] = closes
        _expiry[partition].append((closes + 3600_000, key.encode()))


def _expire(partition: int, store: Any, budget: int = 8) -> None:
    """Forget partials an hour after their window closed (in this partition's context)."""
    queue, now = _expiry[partition], now_ms()
    while queue and budget and queue[0][0] < now:
        _at, key = queue.popleft()
        store.pop(key, None)
        _closing.pop(key.decode(), None)
        budget -= 1


@app.timer(1.0)  # type: ignore[untyped-decorator]
async def publish_partials() -> None:
    """Publish changed partials, and each partial once more when its window closes."""
    if not _started["resent"]:
        _started["resent"] = True
        for key, entry in list(partials.items()):
            window_key, partition = key.decode().rsplit("#", 1)
            metric = window_key.split("|", 1)[0]
            _mark(
                key.decode(),
                window_key,
                windows.window_size_ms(metric, config),
                int(partition),
                entry["partial"],
            )
    now = now_ms()
    for key, closes in list(_closing.items()):
        if closes <= now and key not in _dirty:
            entry = partials.get(key.encode())
            if entry is not None:
                window_key, partition = key.rsplit("#", 1)
                metric = window_key.split("|", 1)[0]
                _dirty[key] = {
                    "window_key": window_key,
                    "partition": int(partition),
                    "size_ms": windows.window_size_ms(metric, config),
                    "partial": entry["partial"],
                }
            _closing[key] = 2**62  # closed: only changes publish it again
    batch = list(_dirty.values())
    _dirty.clear()
    for message in batch:
        await sender.send(
            PARTIALS_TOPIC,
            message["window_key"].encode(),
            json.dumps(message, sort_keys=True).encode(),
        )


@app.agent(partials_in)
async def merge(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    """Keep each partition's latest partial per window; publish closed windows."""
    async for event in stream.events():
        message = json.loads(event.value or b"{}")
        key = message["window_key"].encode()
        entry = merged.get(key) or {"size_ms": message["size_ms"], "parts": {}}
        parts = {**entry["parts"], str(message["partition"]): message["partial"]}
        merged[key] = {"size_ms": message["size_ms"], "parts": parts}
        start = int(message["window_key"].rsplit("|", 1)[1])
        if now_ms() >= start + message["size_ms"] + config.lateness_s * 1000:
            await _publish_window(message["window_key"], message["size_ms"], parts)
        yield None


_published: dict[str, str] = {}


async def _publish_window(window_key: str, size_ms: int, parts: dict[str, Any]) -> None:
    value = windows.merge(parts.values())
    record = windows.record(window_key, size_ms, value, config.top_n)
    fingerprint = json.dumps(record, sort_keys=True)
    if _published.get(window_key) == fingerprint:
        return
    _published[window_key] = fingerprint
    topic = settings.topic("analytics.windows")
    await sender.send(
        topic,
        window_key.encode(),
        serde.encode("sluice.analytics.WindowAggregate", record, topic=topic),
    )
    metrics.sent("analytics.windows")


@app.task  # type: ignore[untyped-decorator]
async def follow_windows() -> None:
    """Keep the web views' copy of analytics.windows current (all partitions)."""
    await view.follow()
