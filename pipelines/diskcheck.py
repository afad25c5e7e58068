"""Refuse to start on a data directory that cannot be written or is nearly full.

Both kinds of trouble otherwise surface late and far from their cause: a Kafka broker
that cannot write its log directory exits with a Java stack trace in its server.log (or
marks the directory offline mid-run and stops serving every partition in it), and a Faust
worker that cannot write its RocksDB dies in a child process, with a traceback, once a
table is first opened. Checking before anything starts turns both into one line that
names the directory, what is wrong with it and what to do, which the CLI prints as
`error: ...` with a non-zero exit code like every other `SluiceError`.

The free-space floors are deliberately small: they catch a full disk, not a slowly
filling one (that needs monitoring, not a start-up check).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from pipelines.errors import StorageError

MiB = 1024 * 1024
#: A broker writes segments, indexes and a KRaft metadata log; 256 MiB is room to start
#: and take some traffic, not a capacity plan.
BROKER_MIN_FREE = 256 * MiB
#: A worker keeps RocksDB tables (restored from changelogs) and a few small files.
WORKER_MIN_FREE = 64 * MiB


def require_space(path: Path, min_bytes: int, what: str, fix: str = "") -> int:
    """Raise `StorageError` unless the file system holding `path` has `min_bytes` free.

    `path` need not exist yet: its nearest existing ancestor is measured, which is the
    file system it will be created on. Returns the free bytes found.
    """
    where = _nearest_existing(path)
    try:
        free = shutil.disk_usage(where).free
    except OSError as exc:
        raise StorageError(
            f"cannot check free space for {what} at {path}: {_reason(exc)}"
        ) from None
    if free < min_bytes:
        raise StorageError(
            f"not enough free space for {what} at {path}: {_size(free)} free, "
            f"{_size(min_bytes)} needed; {fix or 'free some space there'}"
        )
    return free


def require_writable(path: Path, what: str, fix: str = "") -> None:
    """Create `path` if needed and prove a file can be created in it, or raise `StorageError`.

    A real write is the only reliable test: permission bits say nothing about a read-only
    mount, and root passes every `os.access` check.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".sluice-write-check-"):
            pass
    except OSError as exc:
        blocker = _not_a_directory(path)
        detail = f"{blocker} is a file, not a directory" if blocker else _reason(exc)
        raise StorageError(
            f"cannot write {what} in {path}: {detail}; {fix or 'choose a writable directory'}"
        ) from None


def require_data_dir(path: Path, min_bytes: int, what: str, fix: str) -> None:
    """Both checks, writability first (a missing directory is created by it)."""
    require_writable(path, what, fix)
    require_space(path, min_bytes, what, fix)


def check_broker_dir(root: Path) -> None:
    """Before a local broker starts: its directory is writable and has room."""
    require_data_dir(
        root,
        BROKER_MIN_FREE,
        "the local Kafka's data",
        "use another --data-dir (or SLUICE_KAFKA_DIR), or free some space",
    )


def check_worker_dir(directory: Path) -> None:
    """Before a worker starts: its table directory is writable and has room."""
    require_data_dir(
        directory,
        WORKER_MIN_FREE,
        "the worker's tables",
        "point SLUICE_DATA_DIR at a writable directory with space",
    )


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if _exists(candidate):
            return candidate
    return Path(os.sep)


def _not_a_directory(path: Path) -> Path | None:
    """The file that sits where `path` or one of its parents should be a directory."""
    for candidate in (path, *path.parents):
        if _exists(candidate):
            return None if candidate.is_dir() else candidate
    return None


def _exists(path: Path) -> bool:
    """`path.exists()`, but False when a parent may not be searched (EACCES): pathlib
    raises then, and the caller is in the middle of explaining exactly that problem."""
    try:
        return path.exists()
    except OSError:
        return False


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _size(count: int) -> str:
    """Bytes for a human, with the exact figure: `12.0 MiB (12582912 bytes)`."""
    return f"{count / MiB:.1f} MiB ({count} bytes)"
