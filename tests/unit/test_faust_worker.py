"""The stages' Faust worker (`faustapp.Worker`): its table directory, start-up boundary,
agent crash records for /health, and the root logger's level."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import sys
import types
from pathlib import Path

import faust
import pytest

from pipelines.errors import ConfigError
from pipelines.runtime.faustapp import (
    JSON_STATE,
    RAW,
    RAW_SCHEMA,
    StageApp,
    Worker,
    make_app,
    table,
)
from pipelines.runtime.health import AgentCrashes, CrashRecordingSupervisor, health_body
from pipelines.runtime.startup import StartupTracebacks, WebPortInUse, exit_with, require_free_port
from pipelines.settings import Settings


@pytest.fixture
def app(tmp_path: Path) -> faust.App:
    return make_app("orders", Settings(data_dir=tmp_path, topic_prefix="t."))


def _root_level_after_setup(worker_class: type[faust.Worker], app: faust.App) -> int:
    logger = logging.getLogger("sluice-test-root")
    logger.setLevel(logging.WARNING)
    logger.addHandler(logging.NullHandler())
    loop = asyncio.new_event_loop()
    try:
        worker = worker_class(app, loglevel="warn", loop=loop)
        worker.on_setup_root_logger(logger, logging.WARNING)
        return logger.level
    finally:
        loop.close()
        logger.handlers.clear()


def test_stage_apps_run_our_worker_and_supervisor(app: faust.App) -> None:
    assert app.conf.Worker is Worker
    assert app.conf.agent_supervisor is CrashRecordingSupervisor


def test_a_quiet_loglevel_leaves_debug_records_unbuilt(app: faust.App) -> None:
    assert _root_level_after_setup(Worker, app) == logging.WARNING


def test_faust_own_worker_would_turn_debug_on(app: faust.App) -> None:
    """The reason for the subclass: if Faust stops doing this, the subclass can go."""
    assert _root_level_after_setup(faust.Worker, app) == logging.DEBUG


def _worker_for(app: faust.App, port: int) -> Worker:
    """What `faust -A ... worker -p PORT` does: set the port, then build the app's worker.
    (Faust warns if a setting is changed after it was read, so each call gets a new app.)"""
    app.conf.web_port = port
    loop = asyncio.new_event_loop()
    try:
        return Worker(app, loglevel="warn", loop=loop)
    finally:
        loop.close()


def test_the_table_directory_follows_the_port_the_worker_serves_on(
    app: faust.App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLUICE_WORKER_NAME", raising=False)
    _worker_for(app, 16171)
    assert Path(app.conf.datadir).parent == tmp_path / "faust" / "t.sluice-orders"
    assert Path(app.conf.datadir).name == f"{socket.gethostname()}-16171"
    monkeypatch.setenv("SLUICE_WORKER_NAME", "w7")
    named = make_app("orders", Settings(data_dir=tmp_path, topic_prefix="t."))
    _worker_for(named, 16172)
    assert Path(named.conf.datadir).name == "w7"


def test_importing_a_stage_app_touches_no_disk(tmp_path: Path) -> None:
    """Faust's CLI imports the app before anything can report a failure well."""
    make_app("orders", Settings(data_dir=tmp_path / "nowhere", topic_prefix="t."))
    assert not (tmp_path / "nowhere").exists()


def test_the_start_plan_names_every_table_and_its_changelog(app: faust.App) -> None:
    assert isinstance(app, StageApp)
    table(app, "orders", JSON_STATE)
    table(app, "status", RAW_SCHEMA, app.topic("t.orders.status", **RAW))
    plan = app.start_plan()
    assert plan.stage == "orders"
    assert plan.changelogs == {
        "orders": "t.sluice-orders-orders-changelog",
        "status": "t.orders.status",
    }
    assert (plan.web_host, plan.tabledir.parent) == ("127.0.0.1", plan.directory / "v1")


def test_a_crashed_agent_is_recorded_before_its_restart(app: faust.App) -> None:
    assert isinstance(app, StageApp)
    restarted: list[str] = []

    class Actor:
        agent = types.SimpleNamespace(name="pipelines.orders.order_saga", app=app)

        def __init__(self, reason: BaseException) -> None:
            self.crash_reason = reason

        async def restart(self) -> None:
            restarted.append(repr(self.crash_reason))

    async def crash_twice_and_rebalance() -> None:
        supervisor = CrashRecordingSupervisor(max_restarts=100.0, over=1.0)  # as Faust's
        for reason in (ValueError("bad\nsecond line"), KeyError("k"), asyncio.CancelledError()):
            await supervisor.restart_service(Actor(reason))  # the last one is a rebalance
            await asyncio.sleep(0.02)  # mode allows a restart per 10 ms

    asyncio.run(crash_twice_and_rebalance())
    assert len(restarted) == 3  # Faust's restart still happens
    [crash] = app.crashes.all()
    assert (crash.agent, crash.count, crash.error) == (
        "pipelines.orders.order_saga",
        2,
        "KeyError: 'k'",
    )


def test_health_is_503_naming_the_agent_once_one_crashed() -> None:
    crashes = AgentCrashes()
    base = {"app": "sluice-orders", "assigned_partitions": 3}
    assert health_body(crashes, base) == ({"status": "ok", **base, "crashed_agents": []}, 200)
    crashes.record("pipelines.analytics.merge", OverflowError("window_start out of range"))
    body, status = health_body(crashes, base)
    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["error"] == (
        "agent pipelines.analytics.merge crashed: OverflowError: window_start out of range"
    )
    assert body["crashed_agents"][0]["crashes"] == 1


def test_a_busy_web_port_names_the_process_holding_it_and_the_flag() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(WebPortInUse) as info:
            require_free_port("127.0.0.1", port)
    message = str(info.value)
    assert f"web port {port} on 127.0.0.1 is already in use by pid {os.getpid()} (" in message
    assert message.endswith("give this worker another port with -p/--web-port")


def test_a_start_up_failure_is_one_line_and_its_exit_code() -> None:
    stream = io.StringIO()
    with pytest.raises(SystemExit) as info:
        exit_with(ConfigError("low must be below high"), stream)
    assert (stream.getvalue(), info.value.code) == ("error: low must be below high\n", 2)


def test_start_up_log_records_lose_their_traceback_until_the_worker_runs() -> None:
    quiet = StartupTracebacks()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "Error: %r", (1,), sys.exc_info()
        )
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        assert quiet.filter(record)
        assert record.exc_info is None
        quiet.active = False
        record.exc_info = (RuntimeError, RuntimeError("boom"), None)
        quiet.filter(record)
        assert record.exc_info is not None
    finally:
        root.setLevel(level)


def test_a_bug_at_start_up_points_at_the_worker_debug_log() -> None:
    stream = io.StringIO()
    with pytest.raises(SystemExit) as info:
        exit_with(KeyError("changelog"), stream)
    assert info.value.code == 1
    assert stream.getvalue() == (
        "error: unexpected error (KeyError: 'changelog'); "
        "run the worker with --loglevel debug for the traceback\n"
    )
