"""A stage worker's start-up: its checks, and the one boundary every start-up failure ends at.

`faust -A pipelines.<stage>:app worker` and `sluice worker <stage>` start the same way,
because everything here runs inside the app's own `Worker` (see `faustapp.Worker`), not
in a wrapper: the table directory is checked and locked, the web port must be free, the
broker must answer (within the request timeout), the stage's topics must exist as the
catalog says (missing ones are created), and local tables are kept only if they belong
to this cluster and these changelogs (`statedir`). Each check costs at most an admin
round trip; none runs per record.

Whatever fails, at import (bad settings) or at start-up, ends in `exit_with`: one line on
stderr from `pipelines.errors.explain` and its exit code. Tracebacks go to the debug log.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from pipelines import admin
from pipelines.errors import SluiceError, explain
from pipelines.runtime import statedir
from pipelines.runtime.statedir import ClusterState, DirLock, Identity
from pipelines.settings import Settings, get_settings

log = logging.getLogger(__name__)


class WebPortInUse(SluiceError):
    """Another process listens on the web port this worker was given."""


@dataclass(frozen=True)
class StartPlan:
    """What one worker needs checked before Faust starts it."""

    stage: str
    settings: Settings
    directory: Path
    tabledir: Path
    web_host: str | None  # None: the web server is off (faust worker --without-web)
    web_port: int
    changelogs: Mapping[str, str]  # table name -> its changelog topic


def stage_settings() -> Settings:
    """The settings a stage module is built from, at import under `faust -A ...`.

    Faust imports the app module before any of its own machinery runs, so bad settings
    (a malformed SLUICE_BACKPRESSURE, a non-numeric SLUICE_PARTITIONS) end the process
    here, with one line, instead of a traceback through Faust's CLI.
    """
    try:
        return get_settings()
    except Exception as exc:
        exit_with(exc, sys.stderr)


def exit_with(exc: BaseException, stream: IO[str]) -> NoReturn:
    """The start-up boundary: one `error: ...` line and explain's exit code."""
    line, code = explain(exc)
    # explain's hint for a bug is the sluice CLI's -vv; a worker's own log has the traceback
    line = line.replace("run with -vv for", "run the worker with --loglevel debug for")
    log.debug("start-up failed", exc_info=exc)
    stream.write(f"error: {line}\n")
    stream.flush()
    raise SystemExit(code)


def prepare(plan: StartPlan) -> DirLock:
    """Run every start-up check in order, cheapest and most local first.

    Returns the lock on the worker's table directory, to be held while the worker runs.
    """
    from pipelines.acls import stage_specs  # acls imports the stages (relay): not at the top

    if plan.web_host is not None:
        require_free_port(plan.web_host, plan.web_port)
    lock = statedir.lock_worker_dir(plan.directory)
    try:
        created = admin.ensure_topics(plan.settings, stage_specs(plan.stage)).created
        if created:
            log.info("created %d missing topic(s): %s", len(created), ", ".join(created))
        current = cluster_state(plan.settings, plan.changelogs.values())
        applied = statedir.applied_offsets(plan.tabledir, plan.changelogs)
        statedir.settle(plan.directory, current, applied)
    except BaseException:
        lock.release()
        raise
    return lock


def require_free_port(host: str, port: int) -> None:
    """Fail with one line naming the port, who holds it and the flag, if it is taken.

    Binds the way aiohttp will (SO_REUSEADDR), so a port left in TIME_WAIT by a
    worker that just stopped still counts as free.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            holder = port_holder(port)
            who = f" by {holder}" if holder else ""
            raise WebPortInUse(
                f"web port {port} on {host} is already in use{who}; stop that process or "
                "give this worker another port with -p/--web-port"
            ) from None


def port_holder(port: int) -> str | None:
    """`pid N (command line)` of the local process listening on `port`, if this user may
    see it (Linux /proc); None otherwise."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for pid in filter(str.isdigit, _listdir("/proc")):
        for fd in _listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return f"pid {pid} ({_cmdline(pid)})"
    return None


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _cmdline(pid: str) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    words = raw.rstrip(b"\0").decode(errors="replace").split("\0")
    text = " ".join(words)
    return text if len(text) <= 120 else text[:117] + "..."


PASSING_WAIT_S = 30.0  # how long start-up waits out a fault that passes (a leader moving)


def cluster_state(settings: Settings, changelogs: Iterable[str]) -> ClusterState:
    """The cluster id, each changelog topic's id and its partitions' end offsets.

    Two admin round trips (describe, list offsets) after the cluster answered the topic
    check. A topic the cluster does not have gets the id `statedir.MISSING`. An error that
    passes (`admin.passing`: topics created a moment ago have no leader yet, "Not leader
    for partition") is waited out for `PASSING_WAIT_S`, never a failed start.
    """
    client = admin.admin_client(settings)
    names = sorted(set(changelogs))
    deadline, pause = time.monotonic() + PASSING_WAIT_S, 0.1
    while True:
        try:
            return _cluster_state_once(client, names, settings.request_timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not admin.passing(error) or time.monotonic() + pause > deadline:
                raise SluiceError(
                    f"could not describe the changelog topics at {settings.bootstrap_servers}: "
                    f"{error.str() if isinstance(error, KafkaError) else exc}"
                ) from None
            log.info("changelog topics not ready (%s); asking again", exc)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def _cluster_state_once(client: AdminClient, names: list[str], timeout: float) -> ClusterState:
    cluster = client.describe_cluster(request_timeout=timeout).result(timeout=timeout + 1)
    topic_ids, partitions = _describe_topics(client, names, timeout)
    ends = _end_offsets(client, statedir.changelog_partitions(topic_ids, partitions), timeout)
    return ClusterState(Identity(cluster.cluster_id, topic_ids), ends)


def _describe_topics(
    client: AdminClient, names: list[str], timeout: float
) -> tuple[dict[str, str], dict[str, int]]:
    if not names:
        return {}, {}
    futures = client.describe_topics(TopicCollection(names), request_timeout=timeout)
    ids: dict[str, str] = {}
    partitions: dict[str, int] = {}
    for name, future in futures.items():
        try:
            description = future.result(timeout=timeout + 1)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                ids[name] = statedir.MISSING
                continue
            raise
        ids[name] = str(description.topic_id)
        partitions[name] = len(description.partitions)
    return ids, partitions


def _end_offsets(
    client: AdminClient, wanted: list[tuple[str, int]], timeout: float
) -> dict[tuple[str, int], int]:
    if not wanted:
        return {}
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    request = {KafkaTopicPartition(t, p): latest for t, p in wanted}
    futures = client.list_offsets(request, request_timeout=timeout)
    return {
        (tp.topic, tp.partition): int(future.result(timeout=timeout + 1).offset)
        for tp, future in futures.items()
    }


class StartupTracebacks(logging.Filter):
    """While a worker starts, log records keep their message but lose their traceback,
    unless debug logging is on: a start-up failure is reported once, as one line, by
    `exit_with`. Once the worker runs, errors log with tracebacks again."""

    def __init__(self) -> None:
        super().__init__()
        self.active = True

    def filter(self, record: logging.LogRecord) -> bool:
        if self.active and record.exc_info and not logging.getLogger().isEnabledFor(logging.DEBUG):
            record.exc_info = None
            record.exc_text = None
        return True

    def install(self) -> StartupTracebacks:
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)
        return self
