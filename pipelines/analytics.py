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

The aggregation itself is `pipelines.stages.windows`, the same code `sluice replay` runs;
what to publish when is `pipelines.stages.partialbook`. A record whose event time no
window can hold (outside `pipelines.eventtime`'s range) is dead-lettered with the reason,
and replay skips it by the same test. The merge never stops on one bad partial: a partial
whose window cannot be published (it would not encode) is dead-lettered and the window
stays as it was.

`create_app(settings)` builds one app with everything it owns (`AnalyticsStage`); the
module's `app` is the one built from the environment's settings, for `faust -A`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import faust

from pipelines import runtime
from pipelines.catalog import APP_IDS, value_schemas
from pipelines.errors import RecordError
from pipelines.runtime import faustapp
from pipelines.runtime.analytics_web import WindowView, install_views
from pipelines.runtime.deadletter import redriven_for_another
from pipelines.runtime.kit import Output, build_kit
from pipelines.runtime.startup import stage_settings
from pipelines.settings import Settings
from pipelines.stages import windows
from pipelines.stages.partialbook import PartialBook, partial_key

log = logging.getLogger(__name__)

WINDOW_SCHEMA = "sluice.analytics.WindowAggregate"
SCHEMAS = value_schemas(windows.SOURCES)
BATCH = 500  # events folded before the partials they touched are written (and acked)
BATCH_WITHIN_S = 0.2  # a batch that does not fill is folded after this long
PUBLISH_EVERY_S = 1.0  # changed partials are published this often


Touched = dict[bytes, tuple[dict[str, Any], faust.EventT[bytes]]]  # partial key -> (entry, event)


class AnalyticsStage:
    """One analytics app and all it owns: its topics, tables, senders and the partial book.

    Nothing here is shared with another app: two stages built from two settings (another
    topic prefix, another data directory) run side by side in one process. `send` is how
    the stage writes its outputs (partials, windows, dead letters): the app's producer
    unless given (a test records them).
    """

    def __init__(self, settings: Settings, send: Output | None = None) -> None:
        self.kit = kit = build_kit("analytics", settings, send)
        self.settings, self.config, self.app = settings, settings.analytics, kit.app
        self.serde, self.metrics, self.send = kit.serde, kit.metrics, kit.send
        self.dead_letters = kit.dead_letters
        self.windows_topic = settings.topic("analytics.windows")
        self.partials_topic = settings.topic(f"{APP_IDS['analytics']}-partials")
        self.schema_gate = kit.schema_gate([(WINDOW_SCHEMA, "analytics.windows")])
        self.sources = kit.inputs(*windows.SOURCES)
        self.partials_in = kit.topic(f"{APP_IDS['analytics']}-partials")
        self.partials = kit.table("partials", faustapp.JSON_STATE)
        self.merged = kit.table("merged", faustapp.JSON_STATE)
        self.view = WindowView(settings)
        self.book = PartialBook(self.config)

    def install(self) -> faust.App:
        """Add the web views, agents, timer and task to the app (once); returns the app."""
        app = self.app
        self.kit.install_web({"partials": self.partials, "merged": self.merged})
        install_views(app, self.settings, self.view, self.merged)
        # Named as they were when they were module functions: logs and /health name them.
        app.agent(self.sources, name=f"{__name__}.aggregate")(self.aggregate)
        app.timer(PUBLISH_EVERY_S, name=f"{__name__}.publish_partials")(self.publish_partials)
        app.agent(self.partials_in, name=f"{__name__}.merge")(self.merge)
        app.task(self.follow_windows)
        return app

    async def aggregate(self, stream: faust.StreamT[bytes]) -> None:
        """Fold each order and notification event into its partition's window partials.

        Events are taken in batches: a window's partial is read and changed per event but
        written to the table (and its changelog) once per batch, for the last event that
        touched it, before the batch is acknowledged. A batch lost in a crash is taken
        again; the partials' applied offsets keep what was written from being counted twice.
        """
        batches = cast(faust.Stream[bytes], stream).take_events(BATCH, within=BATCH_WITHIN_S)
        async for events in batches:
            touched: Touched = {}
            for event in events:
                with runtime.acting_for(event):
                    await self._take(event, touched)
            for key, (entry, event) in touched.items():
                with runtime.acting_for(event):
                    self.partials[key] = entry

    async def _take(self, event: faust.EventT[bytes], touched: Touched) -> None:
        topic = self.settings.logical_topic(event.message.topic)
        self.metrics.received(topic)
        if redriven_for_another(event.headers, "analytics.dlq"):
            return  # the order stage's dead letter: this stage counted the original
        ref = faustapp.record_ref(event)
        if self.schema_gate.blocked(ref.value):
            await self.schema_gate.ready(ref.value)  # a registry outage waits, never DLQs
        try:
            record = self.serde.decode(ref.value or b"", SCHEMAS[topic], source=ref)
        except RecordError as exc:
            await self.dead_letters.write(ref, str(exc))
            return
        problem = windows.unusable_time(topic, record)
        if problem is not None:  # replay skips it by the same test
            await self.dead_letters.write(ref, problem)
            return
        self._fold(topic, record, event, touched)
        for key in self.book.expired(ref.partition, faustapp.now_ms()):
            self.partials.pop(key, None)
            touched.pop(key, None)

    def _fold(
        self, topic: str, record: dict[str, Any], event: faust.EventT[bytes], touched: Touched
    ) -> None:
        message = event.message
        event_ms = int(record[windows.EVENT_TIME[topic]])
        late = windows.is_late(round(message.timestamp * 1000), event_ms, self.config)
        for c in windows.contributions(topic, record, self.config):
            key = partial_key(c.window_key, message.partition)
            bkey = key.encode()
            held = touched.get(bkey)
            entry = held[0] if held else self.partials.get(bkey)
            entry = entry or {"partial": windows.empty(), "applied": {}}
            if entry["applied"].get(topic, -1) >= message.offset:
                continue  # applied before a crash or rebalance: the partial already has it
            entry = {
                "partial": windows.add(entry["partial"], c, late),
                "applied": {**entry["applied"], topic: message.offset},
            }
            touched[bkey] = (entry, event)
            self.book.mark(key, c.window_key, c.size_ms, message.partition, entry["partial"])

    async def publish_partials(self) -> None:
        """Publish changed partials, and each partial once more when its window closes."""
        if not self.book.resent:  # restored from the changelog: the merge may lack them
            self.book.resend((key, entry["partial"]) for key, entry in self.partials.items())
        self.book.close_due(faustapp.now_ms(), self._stored_partial)
        for message in self.book.take_dirty():
            await self.send(
                self.partials_topic,
                message["window_key"].encode(),
                json.dumps(message, sort_keys=True).encode(),
            )

    def _stored_partial(self, key: str) -> windows.Partial | None:
        entry = self.partials.get(key.encode())
        return None if entry is None else cast(windows.Partial, entry["partial"])

    async def merge(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """Keep each partition's latest partial per window; publish closed windows."""
        async for event in stream.events():
            try:
                await self._merge_one(event.value)
            except Exception as exc:  # one bad partial must not stop the merge (nor restart it)
                ref = faustapp.record_ref(event)
                error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "partial %s[%d]@%d dead-lettered: %s",
                    ref.topic, ref.partition, ref.offset, error,
                )  # fmt: skip
                await self.dead_letters.write(ref, error)
            yield None

    async def _merge_one(self, value: bytes | None) -> None:
        """Merge one partial; the window must encode before the partial is kept."""
        message = json.loads(value or b"{}")
        window_key, size_ms = str(message["window_key"]), int(message["size_ms"])
        key = window_key.encode()
        entry = self.merged.get(key) or {"size_ms": size_ms, "parts": {}}
        parts = {**entry["parts"], str(message["partition"]): message["partial"]}
        merged = windows.merge(parts.values())
        record = windows.record(window_key, size_ms, merged, self.config.top_n)
        # raises if it cannot encode: the partial is dead-lettered, the window unchanged
        encoded = self.serde.encode(WINDOW_SCHEMA, record, topic=self.windows_topic)
        self.merged[key] = {"size_ms": size_ms, "parts": parts}
        closed = faustapp.now_ms() >= record["window_end"] + self.config.lateness_s * 1000
        if closed and self.book.first_sight(window_key, record):
            await self.send(self.windows_topic, window_key.encode(), encoded)
            self.metrics.sent("analytics.windows")

    async def follow_windows(self) -> None:
        """Keep the web views' copy of analytics.windows current (all partitions)."""
        await self.view.follow()


def create_app(settings: Settings) -> faust.App:
    """An analytics app built from `settings`, owning all its state (`AnalyticsStage`)."""
    return AnalyticsStage(settings).install()


app = create_app(stage_settings())  # bad settings: one line, no traceback
