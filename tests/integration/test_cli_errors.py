"""The CLI's error boundary against a live broker: wrong names get one line, not a shrug.

tests/unit/test_cli_boundary.py feeds every subcommand garbage with no broker; these are
the cases only a running cluster can answer: unknown topics and groups, a prefix whose
topics were never created, a busy port. Each: one `error:` line, no traceback, the code.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pipelines.cli import run
from pipelines.settings import Settings


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, pipeline_settings: Settings) -> Settings:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", pipeline_settings.bootstrap_servers)
    monkeypatch.setenv("SLUICE_TOPIC_PREFIX", pipeline_settings.topic_prefix)
    monkeypatch.setenv("SLUICE_DATA_DIR", str(pipeline_settings.data_dir))
    monkeypatch.setenv("SLUICE_PARTITIONS", str(pipeline_settings.partitions))
    return pipeline_settings


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_names_the_cluster_does_not_know_are_one_line_each(
    env: Settings, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    cases: list[tuple[list[str], int, str]] = [
        (["consume", "no.such.topic", "--from-beginning"], 1, "unknown topic 'no.such.topic'"),
        (["lag", "--group", "no-such-group"], 1, "consumer group "),
        (["lag", "--group", "no-such-group", "--json"], 1, "does not exist"),
        (["replay", "--from", "1", "--to", "2", "--topics", "orders.nope"], 1, "cannot replay"),
        (["replay", "--from", "2", "--to", "1"], 2, "--from must be before --to"),
        (["produce", "-t", "orders.nope", "--from-file", "pyproject.toml"], 1, "orders.nope"),
        (["serve", "intake", "--port", str(busy_port)], 1, f"{busy_port}"),
        (["topics", "create", "--partitions", "5"], 1, "partitions"),
    ]
    for argv, code, needle in cases:
        got = run(argv)
        out, err = capsys.readouterr()
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert "Traceback" not in out + err, argv
        assert (got, len(errors)) == (code, 1), (argv, out, err)
        assert needle in errors[0], (argv, errors)


def test_a_prefix_whose_topics_were_never_created(
    env: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLUICE_TOPIC_PREFIX", "never-created.")
    for argv in (["dlq", "list"], ["dlq", "redrive"], ["consume", "orders.placed"], ["lag"]):
        assert run(argv) == 1, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert [line for line in err.splitlines() if line.startswith("error:")], (argv, err)
