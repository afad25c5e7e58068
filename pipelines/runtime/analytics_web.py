"""The analytics stage's web side: JSON views and a small live dashboard.

Closed windows come from analytics.windows, followed by every worker in full (the topic
is small: one record per window and key), so any worker answers for all of them; open
windows come from this worker's merge table. The dashboard is one self-contained HTML
page with canvas charts and no external scripts, so it works on a closed network.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer

from pipelines import lag
from pipelines.catalog import APP_IDS
from pipelines.errors import RecordError
from pipelines.httperrors import HttpProblem
from pipelines.runtime.schemagate import SchemaGate
from pipelines.serde import serde_for
from pipelines.settings import Settings
from pipelines.stages import windows

log = logging.getLogger(__name__)

DASHBOARD = Path(__file__).with_name("dashboard.html")
KEEP_MS = 24 * 3600 * 1000
#: Epoch milliseconds as a query parameter: plain ASCII digits, at most those of a long.
EPOCH_MS = re.compile(r"[0-9]{1,18}")


class WindowView:
    """The latest record per window key on analytics.windows, for the last day."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.latest: dict[str, dict[str, Any]] = {}

    async def follow(self) -> None:
        topic = self.settings.topic("analytics.windows")
        consumer = AIOKafkaConsumer(
            topic,
            **self.settings.aiokafka(
                group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
            ),
        )
        serde = serde_for(self.settings, client_retries=0)
        gate = SchemaGate(serde, [])  # registry look-ups off the event loop, outages waited out
        try:  # started inside: a worker stopped while it starts still closes it
            await consumer.start()
            async for message in consumer:
                if gate.blocked(message.value):
                    await gate.ready(message.value)
                try:
                    record = serde.decode(message.value or b"", "sluice.analytics.WindowAggregate")
                except RecordError as exc:  # the stage's own output: say so, keep following
                    log.warning("window view skips %s[%s]@%s: %s", message.topic,
                                message.partition, message.offset, exc)  # fmt: skip
                    continue
                self.latest[record["window_key"]] = record
                self._forget_old()
        finally:
            await consumer.stop()

    def _forget_old(self) -> None:
        if len(self.latest) % 1000:
            return
        horizon = int(time.time() * 1000) - KEEP_MS
        for key in [k for k, r in self.latest.items() if r["window_end"] < horizon]:
            del self.latest[key]

    def between(self, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
        return sorted(
            (r for r in self.latest.values() if from_ms <= r["window_start"] < to_ms),
            key=lambda r: (r["window_start"], r["window_key"]),
        )


def open_windows(merged: Any, settings: Settings) -> list[dict[str, Any]]:
    """Windows still open on this worker (merged so far), marked as such."""
    out = []
    for key, entry in list(merged.items()):
        value = windows.merge(entry["parts"].values())
        record = windows.record(key.decode(), entry["size_ms"], value, settings.analytics.top_n)
        out.append({**record, "open": True})
    return out


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the given windows (1-minute ones; hourly revenue excluded)."""
    totals: Counter[str] = Counter()
    revenue: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    for r in records:
        metric = r["metric"]
        if metric == "revenue":
            revenue[r["dimension"]] += r["sum"]
        elif metric == "orders_rejected":
            rejected[r["dimension"]] += r["count"]
        if metric in (
            "orders_placed",
            "orders_confirmed",
            "orders_rejected",
            "notifications_delivered",
            "notifications_dead_lettered",
        ):
            totals[metric] += r["count"]
    return {
        "totals": dict(totals),
        "revenue_cents": dict(revenue),
        "rejected_by_reason": dict(rejected),
    }


def install_views(app: faust.App, settings: Settings, view: WindowView, merged: Any) -> None:
    """/analytics/windows, /analytics/summary and /dashboard on the app's web server."""

    @app.page("/analytics/windows")
    async def windows_view(web: Any, request: Any) -> Any:
        now = int(time.time() * 1000)
        from_ms = _int_arg(request, "from", now - 3600_000)
        to_ms = _int_arg(request, "to", now + 60_000)
        closed = view.between(from_ms, to_ms)
        seen = {r["window_key"] for r in closed}
        live = [
            r
            for r in open_windows(merged, settings)
            if from_ms <= r["window_start"] < to_ms and r["window_key"] not in seen
        ]
        return web.json({"from": from_ms, "to": to_ms, "windows": closed + live})

    @app.page("/analytics/summary")
    async def summary_view(web: Any, request: Any) -> Any:
        now = int(time.time() * 1000)
        recent = list(view.between(now - 15 * 60_000, now + 60_000))
        recent += open_windows(merged, settings)
        groups = await asyncio.get_running_loop().run_in_executor(None, _lags, settings)
        return web.json({**summary(recent), "lag": groups, "at": now})

    @app.page("/dashboard")
    async def dashboard(web: Any, request: Any) -> Any:
        return web.html(DASHBOARD.read_text())


def _lags(settings: Settings) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for stage, app_id in APP_IDS.items():
        try:
            out[stage] = lag.total(lag.group_lag(settings, settings.group(app_id), timeout=3))
        except Exception:
            out[stage] = None
    return out


def _int_arg(request: Any, name: str, default: int) -> int:
    """A time parameter (epoch milliseconds or ISO-8601); anything else is a 400 naming it."""
    value = request.query.get(name)
    if not value:
        return default
    if EPOCH_MS.fullmatch(value):
        return int(value)
    from consumers.tail import parse_time

    try:
        return parse_time(value)
    except (ValueError, OverflowError):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise HttpProblem(
            400, f"{name}: not epoch milliseconds or an ISO-8601 time: {shown!r}"
        ) from None
