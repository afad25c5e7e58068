"""The stages' Faust worker keeps the root logger's level (see `faustapp.Worker`)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import faust
import pytest

from pipelines.settings import Settings
from pipelines.stages.faustapp import Worker, make_app


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


def test_stage_apps_run_our_worker(app: faust.App) -> None:
    assert app.conf.Worker is Worker


def test_a_quiet_loglevel_leaves_debug_records_unbuilt(app: faust.App) -> None:
    assert _root_level_after_setup(Worker, app) == logging.WARNING


def test_faust_own_worker_would_turn_debug_on(app: faust.App) -> None:
    """The reason for the subclass: if Faust stops doing this, the subclass can go."""
    assert _root_level_after_setup(faust.Worker, app) == logging.DEBUG
