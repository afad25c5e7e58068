"""The analytics stage's wiring, in process: real encoded events through its Faust agents
(`agent.test_context()`, no broker), and two apps built side by side sharing nothing.

Outputs (partials, windows, dead letters) are recorded instead of produced. Event times
lie ten minutes back, so every window is closed (and none expired, which takes an hour).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faust.events import Event

from pipelines.analytics import WINDOW_SCHEMA, AnalyticsStage, create_app
from pipelines.settings import Settings
from pipelines.stages.windows import WindowConfig
from tests.support.stageapp import app_topics, built_apart, drive, event, until

SMALL = WindowConfig(tumbling_s=5, hopping_s=20, hop_s=10, lateness_s=2, top_n=3)
NOW = int(time.time() * 1000)
T = NOW - 600_000 - NOW % 20_000  # ten minutes back, on a hopping-window boundary
PARTIALS = "t.sluice-analytics-partials"
Headers = list[tuple[str, bytes]] | None


class Recorder:
    """Stands in for the app's producer: keeps what the stage sends, per topic."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, Headers]] = []

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers = None
    ) -> None:
        self.sent.append((topic, key, value, headers))

    def on(self, topic: str) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
        return [(k, v, dict(h or [])) for t, k, v, h in self.sent if t == topic]


def _settings(tmp_path: Path, prefix: str = "t.") -> Settings:
    return Settings(
        data_dir=tmp_path / prefix, topic_prefix=prefix, store="memory://", analytics=SMALL
    )


@pytest.fixture
def out() -> Recorder:
    return Recorder()


@pytest.fixture
def stage(tmp_path: Path, out: Recorder) -> AnalyticsStage:
    stage = AnalyticsStage(_settings(tmp_path), send=out)
    stage.install()
    return stage


def _placed(n: int, at: int, skus: dict[str, int]) -> dict[str, Any]:
    lines = [{"sku": s, "quantity": q, "unit_price_cents": 100} for s, q in skus.items()]
    return {
        "order_id": f"O-{n}",
        "customer_id": "C-1",
        "lines": lines,
        "currency": "EUR",
        "total_cents": 100 * sum(skus.values()),
        "placed_at": at,
        "channel": "WEB",
        "client_ref": None,
    }


def _confirmed(n: int, at: int, cents: int) -> dict[str, Any]:
    return {
        "order_id": f"O-{n}",
        "customer_id": "C-1",
        "currency": "EUR",
        "total_cents": cents,
        "lines": [],
        "payment_id": f"pay-{n}",
        "placed_at": at - 50,
        "confirmed_at": at,
    }


def _fold(stage: AnalyticsStage, events: list[Event], done: Callable[[], bool]) -> None:
    drive(stage.app.agents["pipelines.analytics.aggregate"], events, done, "partials folded")


def _merge(stage: AnalyticsStage, partials: list[tuple[bytes | None, bytes | None]]) -> None:
    """Feed recorded partial messages to the merge agent (partition 0 of the topic)."""
    agent = stage.app.agents["pipelines.analytics.merge"]

    async def run() -> None:
        async with agent.test_context() as ctx:
            channel = ctx.stream().channel
            for offset, (_key, value) in enumerate(partials):
                assert value is not None
                await channel.put(event(stage.app, PARTIALS, 0, offset, value, NOW))
            await until(ctx, lambda: ctx.processed_offset == len(partials), "partials merged")

    asyncio.run(run())


def _partial(stage: AnalyticsStage, window_key: str, partition: int) -> dict[str, Any]:
    entry = stage.partials.get(f"{window_key}#{partition}".encode())
    assert entry is not None, f"no partial {window_key}#{partition}"
    return dict(entry)


def _orders(stage: AnalyticsStage) -> list[Event]:
    """Two orders on partition 0, one on partition 1, and one confirmation; the second
    order on partition 0 is delivered twice (a redelivery after a crash)."""
    encode, app, topic = stage.serde.encode, stage.app, stage.settings.topic
    one = encode("sluice.orders.OrderPlaced", _placed(1, T + 100, {"SKU-A": 2}))
    two = encode("sluice.orders.OrderPlaced", _placed(2, T + 200, {"SKU-A": 1, "SKU-B": 5}))
    three = encode("sluice.orders.OrderPlaced", _placed(3, T + 300, {"SKU-B": 1}))
    paid = encode("sluice.orders.OrderConfirmed", _confirmed(3, T + 400, 250))
    return [
        event(app, topic("orders.placed"), 0, 10, one, T + 100),
        event(app, topic("orders.placed"), 0, 11, two, T + 200),
        event(app, topic("orders.placed"), 1, 4, three, T + 300),
        event(app, topic("orders.placed"), 0, 11, two, T + 200),  # redelivered
        event(app, topic("orders.confirmed"), 2, 0, paid, T + 400),
    ]


def _folded(stage: AnalyticsStage) -> Callable[[], bool]:
    def done() -> bool:
        return stage.partials.get(f"revenue|EUR|{T}#2".encode()) is not None and (
            _partial(stage, f"orders_placed|all|{T}", 0)["applied"] == {"orders.placed": 11}
        )

    return done


def test_events_fold_into_partials_once_per_offset(stage: AnalyticsStage) -> None:
    _fold(stage, _orders(stage), _folded(stage))
    zero = _partial(stage, f"orders_placed|all|{T}", 0)
    assert zero["partial"]["count"] == 2  # the redelivered order counted once
    assert _partial(stage, f"orders_placed|all|{T}", 1)["partial"]["count"] == 1
    assert _partial(stage, f"top_skus|all|{T}", 0)["partial"]["top"] == {"SKU-A": 3, "SKU-B": 5}
    assert _partial(stage, f"revenue|EUR|{T}", 2)["partial"]["sum"] == 250
    assert _partial(stage, f"revenue_1h|EUR|{T}", 2)["partial"]["sum"] == 250
    received = {"stage": "analytics", "topic": "orders.placed"}
    assert stage.metrics.registry.get_sample_value("sluice_events_in_total", received) == 4


def test_partials_are_published_and_merged_into_closed_windows(
    stage: AnalyticsStage, out: Recorder
) -> None:
    _fold(stage, _orders(stage), _folded(stage))
    asyncio.run(stage.publish_partials())  # the timer's tick
    partials = [(k, v) for k, v, _h in out.on(PARTIALS)]
    placed = [json.loads(v or b"") for k, v in partials if k == f"orders_placed|all|{T}".encode()]
    assert sorted((p["partition"], p["partial"]["count"]) for p in placed) == [(0, 2), (1, 1)]
    asyncio.run(stage.publish_partials())  # the windows had closed: each once more
    assert [(k, v) for k, v, _h in out.on(PARTIALS)] == partials + partials
    asyncio.run(stage.publish_partials())
    assert len(out.on(PARTIALS)) == 2 * len(partials)  # nothing changed: nothing published

    _merge(stage, partials)
    windows = {
        k: stage.serde.decode(v or b"", WINDOW_SCHEMA) for k, v, _h in out.on("t.analytics.windows")
    }
    assert windows[f"orders_placed|all|{T}".encode()]["count"] == 3
    top = windows[f"top_skus|all|{T}".encode()]["top"]
    assert top == [{"key": "SKU-B", "value": 6}, {"key": "SKU-A", "value": 3}]
    assert windows[f"revenue_1h|EUR|{T}".encode()]["sum"] == 250
    assert windows[f"revenue_1h|EUR|{T - 10_000}".encode()]["sum"] == 250  # hopping: two
    # a closed window goes out again as each partition's partial reaches it
    published = collections.Counter(k.decode() for k, _v, _h in out.on("t.analytics.windows"))
    assert published == {f"{m}|{T}": 2 for m in ("orders_placed|all", "top_skus|all")} | {
        f"{m}|{T}": 1 for m in ("orders_confirmed|all", "revenue|EUR", "revenue_1h|EUR")
    } | {f"revenue_1h|EUR|{T - 10_000}": 1}

    _merge(stage, partials)  # the same partials again: the windows did not change
    assert len(out.on("t.analytics.windows")) == published.total()


def test_bad_events_are_dead_lettered_with_their_reason(
    stage: AnalyticsStage, out: Recorder
) -> None:
    app = stage.app
    never = stage.serde.encode("sluice.orders.OrderPlaced", _placed(9, -(2**63), {"SKU-A": 1}))
    good = stage.serde.encode("sluice.orders.OrderPlaced", _placed(1, T + 100, {"SKU-A": 1}))
    events = [
        event(app, "t.orders.placed", 0, 1, b"\x00garbage", T),
        event(app, "t.orders.placed", 0, 2, never, T),
        event(app, "t.orders.placed", 0, 3, good, T + 100),
    ]
    _fold(
        stage, events, lambda: stage.partials.get(f"orders_placed|all|{T}#0".encode()) is not None
    )
    letters = out.on("t.analytics.dlq")
    assert [(h["sluice.source.topic"], h["sluice.source.offset"]) for _k, _v, h in letters] == [
        (b"t.orders.placed", b"1"),
        (b"t.orders.placed", b"2"),
    ]
    assert b"placed_at" in letters[1][2]["sluice.error"]
    assert _partial(stage, f"orders_placed|all|{T}", 0)["partial"]["count"] == 1


def test_a_partial_that_cannot_be_merged_is_dead_lettered_and_the_merge_goes_on(
    stage: AnalyticsStage, out: Recorder
) -> None:
    good = {
        "window_key": f"orders_placed|all|{T}",
        "size_ms": 5000,
        "partition": 0,
        "partial": {"count": 4, "sum": 0, "top": {}, "hist": {}, "late": 0},
    }
    _merge(stage, [(None, b"{not json"), (None, json.dumps(good).encode())])
    [(_k, value, headers)] = out.on("t.analytics.dlq")
    assert value == b"{not json"
    assert headers["sluice.error"].startswith(b"JSONDecodeError")
    [(_key, window, _h)] = out.on("t.analytics.windows")
    assert stage.serde.decode(window or b"", WINDOW_SCHEMA)["count"] == 4


def test_two_apps_from_two_settings_share_nothing(tmp_path: Path) -> None:
    parts = ("book", "partials", "merged", "metrics", "view", "dead_letters", "schema_gate")
    one, two = built_apart(
        lambda prefix: create_app(_settings(tmp_path, prefix)),
        "pipelines.analytics.aggregate",
        parts,
    )
    assert isinstance(one, AnalyticsStage)
    assert one.app.conf.id == "a.sluice-analytics"
    assert len(app_topics(one.app)) == 7  # four sources, the partials, two changelogs

    _fold(one, _orders(one), _folded(one))
    assert one.book.take_dirty()
    assert len(two.partials) == 0
    assert two.book.take_dirty() == []
