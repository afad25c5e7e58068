"""A worker's table directory: whose it is, and whether what it holds may be kept.

Local tables (RocksDB) are a cache of the changelog topics, which are the truth. The cache
may be kept only if it provably matches them:

* the last run stopped cleanly (CLEAN_MARK, written after its final commit): after a crash
  the store can hold writes whose changelog records Kafka never got;
* it was built against this cluster and these changelog topics (IDENTITY: cluster id and
  topic ids, written at every start): after `sluice kafka down --purge` or a deleted and
  recreated topic the store describes records that no longer exist;
* no table has applied a changelog offset the topic does not have (its end offset moved
  back, e.g. a truncated log).

Anything else is discarded with one log line and the tables restore from the changelogs.
Every check here is local; what the cluster says comes in as a `ClusterState`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pipelines.diskcheck import check_worker_dir
from pipelines.errors import SluiceError

log = logging.getLogger(__name__)

CLEAN_MARK = "clean-shutdown"  # local tables match the changelogs (written at a clean stop)
IDENTITY = "identity.json"  # the cluster and changelog topics the tables were built from
LOCK = "worker.lock"  # held by the running worker; kept when state is discarded
OFFSET_KEY = b"__faust\0offset__"  # where Faust's RocksDB store keeps a partition's offset
MISSING = ""  # the topic id of a changelog topic the cluster does not have
UNREADABLE = -1  # stands for the offset of a local store that cannot be opened

TopicPartition = tuple[str, int]


class WorkerDirInUse(SluiceError):
    """Another running worker holds this table directory."""


@dataclass(frozen=True)
class Identity:
    """Which cluster and which incarnation of each changelog topic local tables belong to."""

    cluster_id: str | None
    topic_ids: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"cluster_id": self.cluster_id, "topic_ids": dict(self.topic_ids)})

    @classmethod
    def from_json(cls, text: str) -> Identity:
        data = json.loads(text)
        return cls(data.get("cluster_id"), dict(data.get("topic_ids") or {}))


@dataclass(frozen=True)
class ClusterState:
    """What the cluster says now: its identity and each changelog partition's end offset."""

    identity: Identity
    end_offsets: Mapping[TopicPartition, int] = field(default_factory=dict)


class DirLock:
    """An exclusive lock on a worker directory, held for as long as the process lives.

    Two workers on one directory would lock each other out of RocksDB mid-start, with a
    traceback, and overwrite each other's clean-stop marks; the lock turns that into one
    line at start-up. The kernel drops it when the process dies, even by SIGKILL.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK
        self._file: IO[str] | None = None

    def acquire(self) -> DirLock:
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise WorkerDirInUse(
                f"the table directory {self.path.parent} is in use by another worker "
                f"(pid {holder}); give each worker on a host its own web port (-p/--web-port) "
                "or name (--name, SLUICE_WORKER_NAME)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def lock_worker_dir(directory: Path) -> DirLock:
    """Check the directory can be written and has room, then lock it for this process."""
    check_worker_dir(directory)  # unwritable or full: one clear StorageError
    return DirLock(directory).acquire()


def stale_reason(
    directory: Path, current: ClusterState | None, applied: Mapping[TopicPartition, int]
) -> str | None:
    """Why the local state in `directory` may not be kept, or None if it may.

    `applied` is the changelog offset each local table partition has applied; `current`
    is None when the cluster could not be asked (then only the clean-stop mark counts).
    """
    if not has_state(directory):
        return None
    if not (directory / CLEAN_MARK).exists():
        return "the last run did not stop cleanly"
    if current is None:
        return None
    stored = _stored_identity(directory)
    if stored is None:
        return "it does not record which cluster it was built from"
    return _identity_change(stored, current.identity) or _offset_ahead(applied, current)


def _identity_change(stored: Identity, now: Identity) -> str | None:
    if stored.cluster_id != now.cluster_id:
        return (
            f"it was built from another Kafka cluster (cluster id {stored.cluster_id}, "
            f"now {now.cluster_id})"
        )
    for topic, topic_id in sorted(now.topic_ids.items()):
        before = stored.topic_ids.get(topic)
        if before in (None, MISSING, topic_id):  # unknown then (Faust created it), or same
            continue
        if topic_id == MISSING:
            return f"its changelog topic {topic} no longer exists"
        return f"its changelog topic {topic} was deleted and created again since"
    return None


def _offset_ahead(applied: Mapping[TopicPartition, int], current: ClusterState) -> str | None:
    for (topic, partition), offset in sorted(applied.items()):
        if offset == UNREADABLE:
            return f"its store of {topic}[{partition}] cannot be read"
        end = current.end_offsets.get((topic, partition))
        if end is not None and offset >= end:
            return (
                f"it has applied {topic}[{partition}] up to offset {offset}, "
                f"but the topic ends at {end}"
            )
    return None


def settle(
    directory: Path,
    current: ClusterState | None,
    applied: Mapping[TopicPartition, int] | None = None,
) -> str | None:
    """Keep or discard the local state (one warning line if discarded); returns the reason.

    Afterwards the directory records the current identity, and the clean-stop mark is
    gone: a crash of the run that starts now must not look like a clean stop.
    """
    reason = stale_reason(directory, current, applied or {})
    if reason is not None:
        log.warning(
            "discarding the local tables in %s: %s; they restore from the changelog topics",
            directory,
            reason,
        )
        discard(directory)
    (directory / CLEAN_MARK).unlink(missing_ok=True)
    if current is not None:
        _write_identity(directory, current.identity)
    return reason


def prepare_state_dir(directory: Path, current: ClusterState | None = None) -> str | None:
    """Check the directory (writable, room), then keep or discard its state; see `settle`.

    Offsets are not read here: this is the form for callers without a Faust app.
    """
    check_worker_dir(directory)
    return settle(directory, current)


def has_state(directory: Path) -> bool:
    """True when the directory holds anything but the lock."""
    if not directory.is_dir():
        return False
    return any(entry.name != LOCK for entry in directory.iterdir())


def discard(directory: Path) -> None:
    """Remove everything in the directory except the lock the running worker holds."""
    for entry in directory.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def applied_offsets(tabledir: Path, changelogs: Mapping[str, str]) -> dict[TopicPartition, int]:
    """The changelog offset each local RocksDB table partition has applied.

    `changelogs` maps a table name to its changelog topic; Faust keeps each table
    partition in `<tabledir>/<table>-<partition>.db` with its offset under OFFSET_KEY.
    A store that cannot be opened is reported as UNREADABLE, so that it is discarded
    rather than handed to Faust.
    """
    found: dict[TopicPartition, int] = {}
    if not tabledir.is_dir():
        return found
    for table, topic in changelogs.items():
        pattern = re.compile(re.escape(table) + r"-(\d+)\.db")
        for path in tabledir.iterdir():
            match = pattern.fullmatch(path.name)
            if match is not None:
                offset = _read_offset(path)
                if offset is not None:
                    found[(topic, int(match.group(1)))] = offset
    return found


def _read_offset(path: Path) -> int | None:
    from rocksdict import AccessType, Options, Rdict

    try:
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
    except Exception as exc:  # rocksdict raises plain Exceptions for a corrupt store
        log.debug("cannot read %s: %s", path, exc)
        return UNREADABLE
    try:
        raw = db.get(OFFSET_KEY)
    finally:
        db.close()
    return int(raw) if raw is not None else None


def _stored_identity(directory: Path) -> Identity | None:
    try:
        return Identity.from_json((directory / IDENTITY).read_text())
    except (OSError, ValueError, AttributeError):
        return None


def _write_identity(directory: Path, identity: Identity) -> None:
    temporary = directory / (IDENTITY + ".tmp")
    temporary.write_text(identity.to_json())
    temporary.replace(directory / IDENTITY)


def changelog_partitions(
    changelogs: Iterable[str], partitions: Mapping[str, int]
) -> list[TopicPartition]:
    """Every partition of the given changelog topics (those the cluster knows)."""
    return [(t, p) for t in sorted(set(changelogs)) for p in range(partitions.get(t, 0))]
