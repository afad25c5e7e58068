"""Fixtures shared by both test tiers; the broker-backed ones live in integration/."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration is marked `integration` without each file saying so."""
    for item in items:
        if "tests/integration/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With SLUICE_REQUIRE_INTEGRATION=1 (as `make test` sets), a run in which integration
    tests were skipped or none ran fails, so a green suite always means a real broker ran."""
    if os.environ.get("SLUICE_REQUIRE_INTEGRATION") != "1" or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    passed = [r for r in reporter.stats.get("passed", []) if "integration" in r.keywords]
    skipped = [
        r
        for r in reporter.stats.get("skipped", [])
        if "integration" in r.keywords and "docker" not in r.keywords
    ]
    if skipped or not passed:
        reporter.write_line(
            f"SLUICE_REQUIRE_INTEGRATION: {len(passed)} integration tests passed, "
            f"{len(skipped)} skipped; integration tests must run, not skip",
            red=True,
        )
        session.exitstatus = 1
