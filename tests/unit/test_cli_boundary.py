"""The CLI's error boundary, for every subcommand: garbage in, one line and a code out.

The commands are found by walking the click group, so a new subcommand is covered the
day it is added: each gets bad flag values, garbage in its env-var fallbacks, a malformed
`SLUICE_BACKPRESSURE`, and (if it talks to Kafka) an unreachable broker. Each time: no
traceback anywhere, exactly one `error:` line (or click's own usage error), exit 2 for
usage and settings, 1 for everything else, and the unreachable broker answered quickly.
"""

from __future__ import annotations

import errno
import importlib
import io
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from pipelines.cli import cli, run

Path_ = tuple[str, ...]

#: Values for required parameters, by parameter name; a Choice takes its first choice.
SAMPLES = {"topic": "orders.placed", "from_": "2026-01-01T00:00", "to": "2026-01-01T01:00"}
#: Commands that read no Sluice settings (a malformed SLUICE_BACKPRESSURE is not theirs
#: to report). `providers up` would serve until Ctrl-C, so it is not run for that case.
NO_SETTINGS: set[Path_] = {("config",), ("schemas", "check"), ("schemas", "list")}
SERVES_FOREVER: set[Path_] = {("providers", "up")}
UNREACHABLE = "127.0.0.1:1"
#: The module behind `sluice config` (the package's `config` attribute is the command).
CONFIG = importlib.import_module("pipelines.cli.config")


def _commands(group: click.Group = cli, path: Path_ = ()) -> Iterator[tuple[Path_, click.Command]]:
    """Every command under `group` (groups too: some take options of their own)."""
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


COMMANDS = dict(_commands())
LEAVES = {p: c for p, c in COMMANDS.items() if not isinstance(c, click.Group)}


def _minimal(command: click.Command) -> list[str]:
    """The fewest arguments that get past click: a sample for every required parameter."""
    args: list[str] = []
    for param in command.params:
        if not param.required:
            continue
        choices = getattr(param.type, "choices", None)
        value = SAMPLES.get(param.name or "") or (str(choices[0]) if choices else None)
        assert value is not None, f"add a sample for required parameter {param.name!r}"
        args += [value] if isinstance(param, click.Argument) else [param.opts[0], value]
    return args


def _rejects(param: click.Parameter, value: str = "zz") -> bool:
    """Whether the parameter's type refuses `value` (a plain string option takes anything)."""
    try:
        param.type.convert(value, param, None)
    except click.BadParameter:
        return True
    return False


def _typed_options() -> list[tuple[Path_, click.Option, str]]:
    """(command, option, garbage) for every option whose type can refuse garbage; float
    options also get `nan` and `inf`, which click's own range checks let through."""
    cases = []
    for path, command in COMMANDS.items():
        for param in command.params:
            if not isinstance(param, click.Option) or param.is_flag or param.count:
                continue
            floats = isinstance(param.type, click.types.FloatParamType)
            cases += [(path, param, v) for v in ("zz", "nan", "inf")[: 3 if floats else 1]]
    return [(path, param, value) for path, param, value in cases if _rejects(param, value)]


def _env_options() -> list[tuple[Path_, click.Option]]:
    return [
        (path, param)
        for path, command in COMMANDS.items()
        for param in command.params
        if isinstance(param, click.Option) and isinstance(param.envvar, str) and _rejects(param)
    ]


def _talks_to_kafka(command: click.Command) -> bool:
    return any(p.name == "bootstrap_servers" for p in command.params)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No command may touch the real data dirs or a broker this machine happens to run."""
    monkeypatch.setenv("SLUICE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SLUICE_KAFKA_DIR", str(tmp_path / "kafka"))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", UNREACHABLE)
    monkeypatch.setenv("SLUICE_REQUEST_TIMEOUT_S", "1")
    for name in ("SLUICE_TOPIC_PREFIX", "SLUICE_BACKPRESSURE", "SCHEMA_REGISTRY_URL"):
        monkeypatch.delenv(name, raising=False)


def _no_traceback(out: str, err: str) -> None:
    assert "Traceback" not in out + err
    assert 'File "' not in err


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_the_walk_finds_every_subcommand() -> None:
    """A guard on the walk itself: the commands the README documents are all in it."""
    expected = {
        ("consume",),
        ("dlq", "list"),
        ("dlq", "redrive"),
        ("kafka", "status"),
        ("lag",),
        ("produce", "orders"),
        ("replay",),
        ("serve", "intake"),
        ("topics", "create"),
        ("worker",),
    }
    assert expected <= LEAVES.keys()
    assert LEAVES.keys() >= NO_SETTINGS | SERVES_FOREVER


def _case_id(value: object) -> str:
    if isinstance(value, tuple):
        return " ".join(value)
    return value.name or "" if isinstance(value, click.Parameter) else str(value)


@pytest.mark.parametrize(("path", "option", "value"), _typed_options(), ids=_case_id)
def test_a_bad_flag_value_is_a_usage_error(
    path: Path_, option: click.Option, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command = COMMANDS[path]
    code = run([*path, *_minimal(command), option.opts[0], value])
    out, err = capsys.readouterr()
    assert code == 2
    assert "Error: Invalid value for" in err
    assert option.opts[0] in err or (option.name or "") in err
    _no_traceback(out, err)


@pytest.mark.parametrize(("path", "option"), _env_options(), ids=_case_id)
def test_garbage_in_an_env_fallback_is_a_usage_error(
    path: Path_,
    option: click.Option,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert isinstance(option.envvar, str)
    monkeypatch.setenv(option.envvar, "zz")
    code = run([*path, *_minimal(COMMANDS[path])])
    out, err = capsys.readouterr()
    assert code == 2
    assert "Error: Invalid value for" in err
    _no_traceback(out, err)


@pytest.mark.parametrize("path", sorted(LEAVES.keys() - SERVES_FOREVER), ids=" ".join)
def test_a_malformed_nested_setting_is_one_line_and_exit_2(
    path: Path_, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: `SLUICE_BACKPRESSURE='{high: 1'` printed 60 lines of pydantic."""
    monkeypatch.setenv("SLUICE_BACKPRESSURE", "{high: 1")
    code = run([*path, *_minimal(LEAVES[path])])
    out, err = capfd.readouterr()
    _no_traceback(out, err)
    if path in NO_SETTINGS:
        assert code == 0, err
        return
    assert code == 2
    assert _error_lines(err) == [err.strip()]
    assert err.startswith('error: invalid settings: error parsing value for field "backpressure"')
    assert "SLUICE_BACKPRESSURE='{\"high\": 5000}'" in err


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "path", sorted(p for p, c in LEAVES.items() if _talks_to_kafka(c)), ids=" ".join
)
def test_an_unreachable_broker_is_one_line_exit_1_and_quick(
    path: Path_, capfd: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code = run([*path, *_minimal(LEAVES[path]), "--bootstrap-servers", UNREACHABLE])
    elapsed = time.monotonic() - started
    out, err = capfd.readouterr()
    _no_traceback(out, err)
    assert code == 1, err
    failures = _error_lines(err) + [line for line in out.splitlines() if line.startswith("down:")]
    assert len(failures) == 1, out + err  # `kafka status` answers "down: why" on stdout
    assert f"no Kafka broker answered at {UNREACHABLE}" in failures[0]
    assert elapsed < 20, f"took {elapsed:.0f}s to say the broker is unreachable"


@pytest.mark.parametrize(
    "argv",
    [
        ["consume", "orders.placed", "--from-time", "99999999999999999999999"],
        ["consume", "orders.placed", "--from-time", "1969-12-31"],
        ["replay", "--from", "0", "--to", "99999999999999999999999"],
        ["dlq", "redrive", "--since", "yesterday"],
    ],
    ids=" ".join,
)
def test_times_only_the_command_can_check_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Beyond 64 bits, a time used to overflow the client's offset lookup mid-command."""
    assert run(argv) == 2
    out, err = capsys.readouterr()
    assert "Error: Invalid value for" in err
    _no_traceback(out, err)


@pytest.mark.parametrize(
    "argv",
    [["topics", "list"], ["consume", "orders.placed"], ["lag"], ["produce", "inventory"]],
    ids=" ".join,
)
def test_settings_the_kafka_client_refuses_are_one_line_exit_2(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    not_a_certificate = tmp_path / "ca.pem"
    not_a_certificate.write_text("not a certificate\n")
    monkeypatch.setenv("SLUICE_SECURITY__PROTOCOL", "SSL")
    monkeypatch.setenv("SLUICE_SECURITY__CA_FILE", str(not_a_certificate))
    assert run(argv) == 2
    out, err = capsys.readouterr()
    _no_traceback(out, err)
    assert _error_lines(err) == [err.strip()]
    assert err.startswith("error: the Kafka client refused its settings:")
    assert "ssl.ca.location" in err


def test_the_produce_loader_with_an_unreachable_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`produce` is a group that runs on its own with --from-file: covered too."""
    lines = tmp_path / "orders.jsonl"
    order = (
        '{"order_id": "J-1", "customer_id": "C-1", "lines": [], "currency": "EUR", '
        '"total_cents": 0, "placed_at": 1}'
    )
    lines.write_text(order + "\n")
    code = run(["produce", "-t", "orders.placed", "--from-file", str(lines)])
    out, err = capsys.readouterr()
    _no_traceback(out, err)
    assert code == 1
    assert len(_error_lines(err)) == 1
    assert "no Kafka broker answered" in err


class _FullDisk(io.StringIO):
    """A stdout on a full disk: every write fails with ENOSPC."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    "argv",
    [
        ["config"],
        ["config", "--json"],
        ["config", "--markdown"],
        ["schemas", "list"],
        ["schemas", "list", "--json"],
        ["kafka", "acls", "--dry-run"],
    ],
    ids=" ".join,
)
def test_a_full_disk_under_stdout_is_one_line(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdout", _FullDisk())
    code = run(argv)
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: the disk is full")
    assert len(err.strip().splitlines()) == 1


def test_a_report_file_that_cannot_be_written_fails_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "missing-dir" / "report.json"
    code = run(["replay", "--from", "1", "--to", "2", "--report", str(report)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: --report {report} cannot be written")
    assert "no Kafka broker" not in err  # refused before talking to the broker


def test_an_unexpected_exception_is_one_line_and_its_traceback_goes_to_debug(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom() -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(CONFIG, "setting_rows", boom)
    assert run(["config"]) == 1
    out, err = capsys.readouterr()
    assert err == "error: unexpected error (RuntimeError: boom); run with -vv for the traceback\n"
    _no_traceback(out, err)
    caplog.set_level("DEBUG", logger="sluice.cli")
    assert run(["-vv", "config"]) == 1
    logged = [r for r in caplog.records if r.name == "sluice.cli" and r.exc_info]
    assert logged
    assert logged[0].levelname == "DEBUG"


def test_ctrl_c_and_a_closed_pipe(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    def closed() -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(CONFIG, "setting_rows", interrupted)
    assert run(["config"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"  # click adds a newline after ^C
    monkeypatch.setattr(CONFIG, "setting_rows", closed)
    assert run(["config"]) == 1  # `sluice ... | head` ends quietly
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("name", "reason"),
    [("", "a group name cannot be empty"), ("a\x00b", "holds a control character")],
)
def test_a_group_name_librdkafka_cannot_take_is_refused_not_a_crash(
    name: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """librdkafka asserted (SIGABRT) on a consumer whose group id is empty or ends early."""
    assert run(["lag", "--group", name]) == 2
    assert reason in capsys.readouterr().err
