"""The CLI's argument errors: one line, non-zero exit, no traceback, no broker needed."""

from __future__ import annotations

import pytest

from pipelines.cli import run


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["kafka", "up", "--brokers", "2"], "'2' is not one of '1', '3'"),
        (["kafka", "up", "--port", "80"], "80 is not in the range"),
        (["topics", "create", "--partitions", "0"], "0 is not in the range"),
        (["kafka", "sideways"], "No such command 'sideways'"),
        (["demo", "--orders", "-5"], "-5 is not in the range"),
    ],
)
def test_bad_flags_exit_2_with_one_clear_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_unreachable_broker_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLUICE_REQUEST_TIMEOUT_S", "2")
    code = run(["topics", "list", "--bootstrap-servers", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: no Kafka broker answered at 127.0.0.1:1")
    assert len(err.strip().splitlines()) == 1


def test_invalid_settings_from_env_are_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLUICE_PARTITIONS", "zero")
    assert run(["topics", "list", "-b", "127.0.0.1:1"]) == 2
    assert "invalid settings: partitions" in capsys.readouterr().err


def test_help_teaches_the_env_fallback(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["topics", "list", "--help"]) == 0
    assert "KAFKA_BOOTSTRAP_SERVERS" in capsys.readouterr().out
