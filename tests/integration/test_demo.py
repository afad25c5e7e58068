"""`sluice demo` end to end on a real broker: every stage as its own process, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import admin
from pipelines.cli import run
from pipelines.settings import Settings


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_and_replay_equals_live(
    pipeline_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = pipeline_settings
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    report_file = tmp_path / "report.json"
    code = run(
        [
            "demo",
            "--orders", "300",
            "--rate", "100",
            "--seed", "5",
            "--failure-rate", "0.2",
            "--no-live",
            "--report", str(report_file),
            "--bootstrap-servers", settings.bootstrap_servers,
        ]
    )  # fmt: skip
    report = json.loads(report_file.read_text())
    assert code == 0, report
    assert report["produced"] == 300
    assert report["confirmed"] + sum(report["rejected"].values()) == 300
    assert report["unfinished_orders"] == 0
    assert report["duplicates"] == 0
    expected = report["notifications_expected"]
    assert expected > 300  # most customers opted into more than one channel
    assert report["notifications_delivered"] + report["notifications_dead_lettered"] == expected
    assert report["notification_retries"] > 0  # 20% of sends fail at first
    assert report["replay_equal"] is True
    assert report["analytics_windows"] > 0
    assert report["stock_oversold_skus"] == 0
    # without --keep the demo removes what it created
    leftovers = [t for t in admin.list_topics(settings) if ".demo-" in t]
    assert leftovers == []
