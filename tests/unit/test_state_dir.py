"""Local table state is kept only if it stopped cleanly and belongs to the cluster and the
changelog topics it starts against (see `pipelines.runtime.statedir`)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from pipelines.runtime.statedir import (
    CLEAN_MARK,
    IDENTITY,
    LOCK,
    OFFSET_KEY,
    UNREADABLE,
    ClusterState,
    DirLock,
    Identity,
    WorkerDirInUse,
    applied_offsets,
    lock_worker_dir,
    prepare_state_dir,
    settle,
)
from pipelines.settings import Settings

CHANGELOG = "t.sluice-orders-orders-changelog"
NOW = ClusterState(Identity("cluster-A", {CHANGELOG: "id-1"}), {(CHANGELOG, 0): 10})


def _stopped_cleanly(directory: Path, identity: Identity | None = NOW.identity) -> Path:
    (directory / "v1" / "tables").mkdir(parents=True)
    (directory / "v1" / "tables" / "orders-0.db").mkdir()
    (directory / CLEAN_MARK).write_text("1\n")
    if identity is not None:
        (directory / IDENTITY).write_text(identity.to_json())
    return directory


def _kept(directory: Path) -> bool:
    return (directory / "v1" / "tables" / "orders-0.db").exists()


def test_first_start_has_nothing_to_discard(tmp_path: Path) -> None:
    assert prepare_state_dir(tmp_path / "orders-1") is None


def test_state_of_a_crashed_run_is_discarded(tmp_path: Path) -> None:
    directory = tmp_path / "orders-1"
    (directory / "tables").mkdir(parents=True)
    (directory / "tables" / "inventory.db").write_text("ahead of the changelog")
    assert prepare_state_dir(directory) == "the last run did not stop cleanly"
    assert list(directory.iterdir()) == []


def test_state_of_a_clean_stop_on_the_same_cluster_is_kept_and_the_mark_consumed(
    tmp_path: Path,
) -> None:
    directory = _stopped_cleanly(tmp_path / "orders-1")
    assert settle(directory, NOW, {(CHANGELOG, 0): 9}) is None
    assert _kept(directory)
    assert not (directory / CLEAN_MARK).exists()  # a crash of this run must not look clean
    assert Identity.from_json((directory / IDENTITY).read_text()) == NOW.identity


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (
            ClusterState(Identity("cluster-B", {CHANGELOG: "id-1"})),
            "built from another Kafka cluster (cluster id cluster-A, now cluster-B)",
        ),
        (
            ClusterState(Identity("cluster-A", {CHANGELOG: "id-2"})),
            f"changelog topic {CHANGELOG} was deleted and created again",
        ),
        (
            ClusterState(Identity("cluster-A", {CHANGELOG: ""})),
            f"changelog topic {CHANGELOG} no longer exists",
        ),
        (
            ClusterState(Identity("cluster-A", {CHANGELOG: "id-1"}), {(CHANGELOG, 0): 5}),
            f"applied {CHANGELOG}[0] up to offset 9, but the topic ends at 5",
        ),
    ],
)
def test_clean_state_of_another_cluster_or_changelog_is_discarded(
    tmp_path: Path, now: ClusterState, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    directory = _stopped_cleanly(tmp_path / "orders-1")
    lock = lock_worker_dir(directory)
    try:
        with caplog.at_level(logging.WARNING):
            found = settle(directory, now, {(CHANGELOG, 0): 9})
    finally:
        lock.release()
    assert found is not None
    assert reason in found
    assert not _kept(directory)
    assert (directory / LOCK).exists()  # the running worker keeps its lock
    assert Identity.from_json((directory / IDENTITY).read_text()) == now.identity
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert reason in lines[0]
    assert "restore from the changelog" in lines[0]


def test_clean_state_without_a_recorded_identity_is_discarded(tmp_path: Path) -> None:
    """State from before identities were recorded cannot prove where it came from."""
    directory = _stopped_cleanly(tmp_path / "orders-1", identity=None)
    assert "does not record which cluster" in (settle(directory, NOW) or "")


def test_a_changelog_this_run_does_not_use_is_no_reason_to_discard(tmp_path: Path) -> None:
    stored = Identity("cluster-A", {CHANGELOG: "id-1", "t.old-changelog": "id-9"})
    directory = _stopped_cleanly(tmp_path / "orders-1", identity=stored)
    assert settle(directory, NOW) is None


def test_a_changelog_that_did_not_exist_at_the_last_start_is_no_reason_to_discard(
    tmp_path: Path,
) -> None:
    """Faust creates a changelog topic the catalog does not hold on first use."""
    stored = Identity("cluster-A", {CHANGELOG: ""})
    directory = _stopped_cleanly(tmp_path / "orders-1", identity=stored)
    assert settle(directory, NOW) is None


def test_applied_offsets_are_read_from_faust_rocksdb_stores(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    tables.mkdir()
    for partition, offset in ((0, 41), (2, 7)):
        db = Rdict(str(tables / f"orders-{partition}.db"), options=Options(raw_mode=True))
        db[OFFSET_KEY] = str(offset).encode()
        db[b"some-key"] = b"value"
        db.close()
    empty = Rdict(str(tables / "orders-1.db"), options=Options(raw_mode=True))
    empty.close()
    (tables / "status-0.db").mkdir()  # not a RocksDB at all
    found = applied_offsets(tables, {"orders": CHANGELOG, "status": "t.orders.status"})
    assert found == {(CHANGELOG, 0): 41, (CHANGELOG, 2): 7, ("t.orders.status", 0): UNREADABLE}


def test_an_unreadable_store_is_discarded(tmp_path: Path) -> None:
    directory = _stopped_cleanly(tmp_path / "orders-1")
    reason = settle(directory, NOW, {(CHANGELOG, 1): UNREADABLE})
    assert reason == f"its store of {CHANGELOG}[1] cannot be read"


def test_a_directory_in_use_by_another_process_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "orders-1"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from pipelines.runtime.statedir import lock_worker_dir;"
            f"held = lock_worker_dir(Path({str(directory)!r}));"
            "print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkerDirInUse, match=rf"in use by another worker \(pid {holder.pid}\)"):
            lock_worker_dir(directory)
    finally:
        holder.kill()
        holder.wait()
    lock_worker_dir(directory).release()  # the kernel dropped the dead holder's lock


def test_the_lock_is_released_for_the_next_worker(tmp_path: Path) -> None:
    lock = DirLock(tmp_path).acquire()
    lock.release()
    DirLock(tmp_path).acquire().release()


def test_the_directory_follows_the_name_or_the_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLUICE_WORKER_NAME", raising=False)
    settings = Settings(data_dir=tmp_path)
    assert settings.worker_dir("app", 16171).name.endswith("-16171")
    assert settings.worker_dir("app", 16171, "w1") == tmp_path / "faust" / "app" / "w1"
    monkeypatch.setenv("SLUICE_WORKER_NAME", "w2")
    assert Settings(data_dir=tmp_path).worker_dir("app", 16171).name == "w2"
