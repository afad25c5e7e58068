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
A record whose event time no window can hold (outside `pipelines.eventtime`'s range) is
dead-lettered with the reason, and replay skips it by the same test. The merge never
stops on one bad partial: a partial whose window cannot be published (it would not
encode) is dead-lettered and the window stays as it was.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import faust

from pipelines import runtime
from pipelines.catalog import APP_IDS, value_schemas
from pipelines.errors import RecordError
from pipelines.serde import serde_for
from pipelines.stages import windows
from pipelines.stages.analytics_web import WindowView, install_views
from pipelines.stages.deadletter import DeadLetters, redriven_for_another
from pipelines.stages.faustapp import (
    JSON_STATE,
    RAW,
    DirectSender,
    StageMetrics,
    install_web,
    make_app,
    now_ms,
    record_ref,
    table,
)
from pipelines.stages.schemagate import SchemaGate
from pipelines.stages.startup import stage_settings

log = logging.getLogger(__name__)

settings = stage_settings()  # bad settings: one line, no traceback
config = settings.analytics
serde = serde_for(settings, client_retries=0)  # the schema gate retries, off the event loop
metrics = StageMetrics("analytics")
app = make_app("analytics", settings)
sender = DirectSender(app)
WINDOWS_TOPIC = settings.topic("analytics.windows")
WINDOW_SCHEMA = "sluice.analytics.WindowAggregate"
dead_letters = DeadLetters(
    "analytics", settings.topic("analytics.dlq"), sender.send, metrics.dead_letters
)
schema_gate = SchemaGate(serde, [(WINDOW_SCHEMA, WINDOWS_TOPIC)])
SCHEMAS = value_schemas(windows.SOURCES)
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


BATCH = 500  # events folded before the partials they touched are written (and acked)
BATCH_WITHIN_S = 0.2  # a batch that does not fill is folded after this long


@app.agent(sources)
async def aggregate(stream: faust.StreamT[bytes]) -> None:
    """Fold each order and notification event into its partition's window partials.

    Events are taken in batches: a window's partial is read and changed per event but
    written to the table (and its changelog) once per batch, for the last event that
    touched it, before the batch is acknowledged. A batch lost in a crash is taken again;
    the partials' applied offsets keep what was written from being counted twice.
    """
    batches = cast(faust.Stream[bytes], stream).take_events(BATCH, within=BATCH_WITHIN_S)
    async for events in batches:
        touched: dict[bytes, tuple[dict[str, Any], faust.EventT[bytes]]] = {}
        for event in events:
            with runtime.acting_for(event):
                await _take(event, touched)
        for key, (entry, event) in touched.items():
            with runtime.acting_for(event):
                partials[key] = entry


async def _take(event: faust.EventT[bytes], touched: dict[bytes, Any]) -> None:
    topic = settings.logical_topic(event.message.topic)
    metrics.received(topic)
    if redriven_for_another(event.headers, "analytics.dlq"):
        return  # the order stage's dead letter: this stage counted the original
    ref = record_ref(event)
    if schema_gate.blocked(ref.value):
        await schema_gate.ready(ref.value)  # a registry outage waits, never DLQs
    try:
        record = serde.decode(ref.value or b"", SCHEMAS[topic], source=ref)
    except RecordError as exc:
        await dead_letters.write(ref, str(exc))
        return
    problem = windows.unusable_time(topic, record)
    if problem is not None:  # replay skips it by the same test
        await dead_letters.write(ref, problem)
        return
    _fold(topic, record, event, touched)
    _expire(ref.partition, partials, touched)


def _fold(
    topic: str, record: dict[str, Any], event: faust.EventT[bytes], touched: dict[bytes, Any]
) -> None:
    message = event.message
    event_ms = int(record[windows.EVENT_TIME[topic]])
    late = windows.is_late(round(message.timestamp * 1000), event_ms, config)
    for c in windows.contributions(topic, record, config):
        key = f"{c.window_key}#{message.partition}"
        bkey = key.encode()
        held = touched.get(bkey)
        entry = held[0] if held else partials.get(bkey)
        entry = entry or {"partial": windows.empty(), "applied": {}}
        if entry["applied"].get(topic, -1) >= message.offset:
            continue  # applied before a crash or rebalance: the partial already has it
        entry = {
            "partial": windows.add(entry["partial"], c, late),
            "applied": {**entry["applied"], topic: message.offset},
        }
        touched[bkey] = (entry, event)
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


def _expire(partition: int, store: Any, touched: dict[bytes, Any], budget: int = 8) -> None:
    """Forget partials an hour after their window closed (in this partition's context)."""
    queue, now = _expiry[partition], now_ms()
    while queue and budget and queue[0][0] < now:
        _at, key = queue.popleft()
        store.pop(key, None)
        touched.pop(key, None)
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
        try:
            await _merge_one(event.value)
        except Exception as exc:  # one bad partial must not stop the merge (nor restart it)
            ref = record_ref(event)
            error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "partial %s[%d]@%d dead-lettered: %s", ref.topic, ref.partition, ref.offset, error
            )
            await dead_letters.write(ref, error)
        yield None


async def _merge_one(value: bytes | None) -> None:
    """Merge one partial; the window must encode before the partial is kept."""
    message = json.loads(value or b"{}")
    window_key, size_ms = str(message["window_key"]), int(message["size_ms"])
    key = window_key.encode()
    entry = merged.get(key) or {"size_ms": size_ms, "parts": {}}
    parts = {**entry["parts"], str(message["partition"]): message["partial"]}
    record = windows.record(window_key, size_ms, windows.merge(parts.values()), config.top_n)
    encoded = serde.encode(WINDOW_SCHEMA, record, topic=WINDOWS_TOPIC)  # raises if it cannot
    merged[key] = {"size_ms": size_ms, "parts": parts}
    if now_ms() >= record["window_end"] + config.lateness_s * 1000:
        await _publish_window(window_key, record, encoded)


_published: dict[str, str] = {}


async def _publish_window(window_key: str, record: dict[str, Any], encoded: bytes) -> None:
    fingerprint = json.dumps(record, sort_keys=True)
    if _published.get(window_key) == fingerprint:
        return
    _published[window_key] = fingerprint
    await sender.send(WINDOWS_TOPIC, window_key.encode(), encoded)
    metrics.sent("analytics.windows")


@app.task  # type: ignore[untyped-decorator]
async def follow_windows() -> None:
    """Keep the web views' copy of analytics.windows current (all partitions)."""
    await view.follow()
