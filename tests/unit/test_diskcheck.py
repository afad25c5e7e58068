"""Disk and permission trouble at start: one clear line and a non-zero exit, no traceback.

Free space is faked by patching `shutil.disk_usage`; an unwritable directory is made two
ways: a path under a regular file (fails for everyone, root included) and a read-only
directory. Permission bits do not stop root, so when the suite runs as root the
read-only checks run with the effective user switched to `nobody` for their duration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

from pipelines import diskcheck
from pipelines.cli import run
from pipelines.errors import StorageError
from pipelines.localkafka import LocalCluster
from pipelines.runtime.statedir import prepare_state_dir

MiB = diskcheck.MiB
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


class Usage(NamedTuple):
    total: int
    used: int
    free: int


@pytest.fixture
def nearly_full(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file system has 10 MiB free; returns the paths that were measured."""
    measured: list[str] = []

    def fake(path: str | os.PathLike[str]) -> Usage:
        measured.append(os.fspath(path))
        return Usage(100 * 1024 * MiB, 100 * 1024 * MiB - 10 * MiB, 10 * MiB)

    monkeypatch.setattr(shutil, "disk_usage", fake)
    return measured


@pytest.fixture
def no_java(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if `up` gets as far as looking for Java: the disk check must come first (and a
    regression must not start a real broker from a unit test)."""

    def refuse() -> str:
        raise AssertionError("the disk check must come before Java is even looked for")

    monkeypatch.setattr("pipelines.localkafka.cluster.check_java", refuse)


@pytest.fixture
def read_only() -> Iterator[Path]:
    """A read-only directory (mode 0o555) that user `nobody` can reach: pytest's own
    tmp_path sits under a root-only 0o700 directory when running as root."""
    base = Path(tempfile.mkdtemp(prefix="sluice-ro-"))
    directory = base / "ro"
    directory.mkdir()
    base.chmod(0o755)
    directory.chmod(0o555)
    try:
        yield directory
    finally:
        directory.chmod(0o700)
        shutil.rmtree(base)


@contextmanager
def unprivileged() -> Iterator[None]:
    """Run the block as user `nobody` when running as root (a no-op otherwise)."""
    if not IS_ROOT:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def _under_a_file(tmp_path: Path) -> Path:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    return blocker / "kafka"


def test_low_space_names_the_path_free_needed_and_the_fix(
    tmp_path: Path, nearly_full: list[str]
) -> None:
    target = tmp_path / "not" / "there" / "yet"
    with pytest.raises(StorageError) as info:
        diskcheck.require_space(target, 64 * MiB, "the worker's tables", "use another disk")
    message = str(info.value)
    assert message == (
        f"not enough free space for the worker's tables at {target}: "
        f"10.0 MiB ({10 * MiB} bytes) free, 64.0 MiB ({64 * MiB} bytes) needed; use another disk"
    )
    assert nearly_full == [str(tmp_path)]  # the nearest existing ancestor was measured
    assert not (tmp_path / "not").exists()  # checking creates nothing


def test_enough_space_passes_and_reports_the_free_bytes(
    tmp_path: Path, nearly_full: list[str]
) -> None:
    assert diskcheck.require_space(tmp_path, 10 * MiB, "x") == 10 * MiB


def test_writable_check_creates_the_directory_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    diskcheck.require_writable(target, "x")
    assert target.is_dir()
    assert list(target.iterdir()) == []


def test_a_path_under_a_file_names_the_file(tmp_path: Path) -> None:
    target = _under_a_file(tmp_path)
    with pytest.raises(StorageError) as info:
        diskcheck.require_writable(target / "deeper", "the local Kafka's data", "pick another")
    assert str(info.value) == (
        f"cannot write the local Kafka's data in {target / 'deeper'}: "
        f"{target.parent} is a file, not a directory; pick another"
    )


@pytest.mark.parametrize("below", ["", "kafka", "kafka/node-1"])
def test_a_read_only_directory_is_refused(read_only: Path, below: str) -> None:
    target = read_only / below
    with unprivileged(), pytest.raises(StorageError) as info:
        diskcheck.require_writable(target, "x", "fix it")
    assert str(info.value) == f"cannot write x in {target}: Permission denied; fix it"
    assert not (read_only / "kafka").exists()


def test_the_broker_refuses_a_full_disk_before_anything_starts(
    tmp_path: Path, nearly_full: list[str], no_java: None
) -> None:
    with pytest.raises(StorageError, match=r"not enough free space for the local Kafka's data"):
        LocalCluster(tmp_path / "kafka", 1, 29092).up()


def test_a_worker_refuses_a_full_disk(tmp_path: Path, nearly_full: list[str]) -> None:
    with pytest.raises(StorageError, match=r"space for the worker's tables .* SLUICE_DATA_DIR"):
        prepare_state_dir(tmp_path / "orders-1")


def test_a_worker_refuses_a_state_dir_under_a_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"is a file, not a directory"):
        prepare_state_dir(_under_a_file(tmp_path) / "orders-1")


def test_a_worker_refuses_a_read_only_data_dir(read_only: Path) -> None:
    directory = read_only / "faust" / "sluice-orders" / "orders-1"
    with (
        unprivileged(),
        pytest.raises(StorageError, match=r"cannot write the worker's tables .*Permission denied"),
    ):
        prepare_state_dir(directory)


def _one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], err
    assert "Traceback" not in err


def test_kafka_up_on_a_full_disk_is_one_line_and_exit_1(
    tmp_path: Path, nearly_full: list[str], no_java: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(["kafka", "up", "--data-dir", str(tmp_path / "kafka"), "--port", "29092"])
    assert code == 1
    _one_error_line(
        capsys.readouterr().err, "not enough free space", str(tmp_path / "kafka"), "--data-dir"
    )


def _sluice(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a child process: what a user's terminal shows."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *argv],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_kafka_up_under_a_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    target = _under_a_file(tmp_path)
    done = _sluice("kafka", "up", "--data-dir", str(target), "--port", "29092")
    assert done.returncode == 1
    _one_error_line(done.stderr, str(target), "is a file, not a directory", "--data-dir")
    assert done.stdout == ""


def test_kafka_up_in_a_read_only_directory_is_one_line_and_exit_1(
    read_only: Path, no_java: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # in process: as root, a child could not even start Python as `nobody` here
    with unprivileged():
        code = run(["kafka", "up", "--data-dir", str(read_only / "kafka"), "--port", "29092"])
    assert code == 1
    _one_error_line(capsys.readouterr().err, str(read_only / "kafka"), "Permission denied")
