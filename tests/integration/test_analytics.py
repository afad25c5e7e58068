"""Analytics live and replayed: the same windows, after a live run with a crashed worker."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from pipelines.cli import run
from pipelines.settings import Settings
from pipelines.stages.windows import WindowConfig
from producers.generator import GeneratorConfig, OrderGenerator
from producers.inventory import seed_inventory
from producers.orders import OrderRun, produce_orders
from tests.support import pipeline

SMALL = WindowConfig(tumbling_s=5, hopping_s=20, hop_s=10, lateness_s=2, top_n=3)
PLACED = "sluice.orders.OrderPlaced"


@pytest.fixture
def analytics_settings(pipeline_settings: Settings) -> Settings:
    return pipeline_settings.model_copy(update={"analytics": SMALL})


def _env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)


@pytest.mark.slow
@pytest.mark.chaos
def test_replay_equals_live_after_a_worker_crash(
    analytics_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = analytics_settings
    seed_inventory(settings, 200)
    started_ms = int(time.time() * 1000)
    with pipeline.workers(settings, tmp_path) as group:
        group.start("orders")
        first = group.start("analytics")
        first.wait_ready()
        feeder = threading.Thread(
            target=produce_orders,
            args=(
                settings,
                OrderRun(
                    count=800, rate=100, generator=GeneratorConfig(seed=31, invalid_fraction=0.1)
                ),
            ),
        )
        feeder.start()
        time.sleep(4)
        first.kill()  # a crash mid-stream: redelivered records must not count twice
        group.start("analytics", name="analytics-restarted").wait_ready()
        feeder.join()
        gen = OrderGenerator(GeneratorConfig(seed=31))
        pipeline.wait_for_outcomes(settings, {gen.order_id(n) for n in range(800)}, 180, group)
        time.sleep(SMALL.hopping_s + SMALL.lateness_s + 2)  # every window, hourly too, closed
        live = pipeline.settled_windows(settings)
        _check_dashboard(group.workers[-1].port)
        pipeline.wait_for_idle(settings, "analytics", timeout=90)

    placed = sum(
        w["count"] + w["late_events"] for w in live.values() if w["metric"] == "orders_placed"
    )
    assert placed == 800  # each order counted exactly once across the crash

    groups_before = _committed_groups(settings)
    _env(monkeypatch, settings)
    report = tmp_path / "replay.json"
    code = run(
        [
            "replay",
            "--from",
            str(started_ms - 60_000),
            "--to",
            str(int(time.time() * 1000)),
            "--report",
            str(report),
        ]
    )
    assert code == 0
    replayed = {w["window_key"]: w for w in json.loads(report.read_text())["windows"]}
    assert replayed.keys() == live.keys()
    for key, window in live.items():
        assert replayed[key] == window, key
    assert _committed_groups(settings) == groups_before  # replay committed nothing
    assert "events" in capsys.readouterr().out


def _check_dashboard(port: int) -> None:
    """The page loads in headless Chromium, draws non-empty charts, logs no errors."""
    from tests.support import browser

    page = browser.load(
        f"http://127.0.0.1:{port}/dashboard",
        "[...document.querySelectorAll('canvas')].map(c => [c.id, Number(c.dataset.points)])",
    )
    assert page.errors == []
    points = dict(page.value)
    assert set(points) == {"throughput", "outcomes", "revenue", "lag"}
    assert all(n > 0 for n in points.values()), points


def _committed_groups(settings: Settings) -> set[str]:
    from pipelines.admin import admin_client

    result = admin_client(settings).list_consumer_groups().result(timeout=10)
    return {g.group_id for g in result.valid if g.group_id.startswith(settings.topic_prefix)}


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--from", "2026-01-02", "--to", "2026-01-01"], 2, "--from must be before --to"),
        (
            ["--topics", "orders.nope", "--from", "0", "--to", "1000"],
            1,
            "cannot replay orders.nope",
        ),
        (["--from", "yesterday", "--to", "1000"], 2, "not an ISO-8601 time"),
    ],
)
def test_replay_bad_input(
    pipeline_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    needle: str,
) -> None:
    _env(monkeypatch, pipeline_settings)
    assert run(["replay", *args]) == code
    assert needle in capsys.readouterr().err


def test_replay_of_an_empty_range_is_an_empty_report(
    pipeline_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _env(monkeypatch, pipeline_settings)
    report = tmp_path / "empty.json"
    assert run(["replay", "--from", "0", "--to", "1000", "--report", str(report)]) == 0
    body = json.loads(report.read_text())
    assert (body["events"], body["windows"]) == (0, [])


EDGES = (-(2**63), 2**63 - 1)  # placed_at at both ends of an Avro long


@pytest.mark.slow
def test_event_times_at_the_edge_of_long_are_dead_lettered_and_replay_skips_them(
    pipeline_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two orders placed at the ends of a long and one garbage partial, among 40 normal
    orders: the saga ends the two REJECTED INVALID (once each, no stock touched), analytics
    dead-letters both placements and the partial with the reason, keeps running and
    publishes every other window, and a replay over the range skips the two the same way
    (and says so), so it equals live. (Before the fix the merge agent crashed on them:
    "EncodeError: window_start ... out of range for long".)"""
    from confluent_kafka import Producer

    from pipelines.catalog import APP_IDS
    from pipelines.serde import serde_for

    off = pipeline_settings.backpressure.model_copy(update={"enabled": False})
    config = WindowConfig(tumbling_s=5, hopping_s=10, hop_s=5, lateness_s=2, top_n=3)
    settings = pipeline_settings.model_copy(update={"analytics": config, "backpressure": off})
    seed_inventory(settings, 200)
    started_ms = int(time.time() * 1000)
    gen = OrderGenerator(GeneratorConfig(seed=32))
    orders = [gen.make(n) for n in range(42)]
    for order, placed_at in zip(orders[-2:], EDGES, strict=True):
        order["placed_at"] = placed_at
    serde, topic = serde_for(settings), settings.topic("orders.placed")
    with pipeline.workers(settings, tmp_path) as group:
        group.start("orders")
        analytics = group.start("analytics")
        analytics.wait_ready()
        producer = Producer(settings.confluent_producer())
        for order in orders:
            producer.produce(topic, serde.encode(PLACED, order, topic=topic), order["order_id"])
        partials = settings.topic(f"{APP_IDS['analytics']}-partials")
        producer.produce(partials, b"not a partial", b"orders_placed|all|0")
        assert producer.flush(20) == 0
        found = pipeline.wait_for_outcomes(settings, {o["order_id"] for o in orders}, 90, group)
        for order in orders[-2:]:
            (outcome,) = found[order["order_id"]]
            assert (outcome["topic"], outcome["reason"]) == ("orders.rejected", "INVALID")
            assert outcome["detail"].startswith("placed_at: event time")
        time.sleep(config.hopping_s + config.lateness_s + 2)  # every window closed
        live = pipeline.settled_windows(settings)
        pipeline.wait_for_idle(settings, "analytics", timeout=60)
        assert analytics.alive()
        assert analytics.metric("sluice_dead_letters_total") == 3
        assert "EncodeError" not in analytics.output()

    _check_letters(settings, topic, partials)
    placed = sum(
        w["count"] + w["late_events"] for w in live.values() if w["metric"] == "orders_placed"
    )
    assert placed == 40
    assert all(0 <= w["window_start"] <= time.time() * 1000 for w in live.values())

    _env(monkeypatch, settings)
    report = tmp_path / "replay.json"
    to_ms = str(int(time.time() * 1000))
    assert (
        run(["replay", "--from", str(started_ms - 60_000), "--to", to_ms, "--report", str(report)])
        == 0
    )
    body = json.loads(report.read_text())
    assert body["out_of_range"] == 2  # skipped as live dead-lettered them, and reported
    assert {w["window_key"]: w for w in body["windows"]} == live
    assert "out_of_range" in capsys.readouterr().out


def _check_letters(settings: Settings, topic: str, partials: str) -> None:
    """analytics.dlq: both edge placements and the garbage partial, each with its reason."""
    from consumers.tail import StartAt, read

    letters = {row["key"]: row for row in read(settings, "analytics.dlq", StartAt("beginning"))}
    assert len(letters) == 3
    garbage = letters.pop("orders_placed|all|0")
    assert garbage["headers"]["sluice.source.topic"] == partials
    assert garbage["headers"]["sluice.error"].startswith("JSONDecodeError")
    assert sorted(row["value"]["placed_at"] for row in letters.values()) == sorted(EDGES)
    for row in letters.values():
        assert row["headers"]["sluice.source.topic"] == topic
        assert row["headers"]["sluice.error"].startswith("placed_at: event time")
