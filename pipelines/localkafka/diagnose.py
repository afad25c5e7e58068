"""Turn a broker that died during start into one sentence a user can act on.

Kafka explains its failures deep in a log; we scan the last lines for the handful of
causes users actually hit and name them, then quote the tail so nothing is hidden.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

from pipelines.localkafka.nodes import NodeSpec

_CAUSES: tuple[tuple[str, str], ...] = (
    ("Address already in use", "a port it needs is already in use by another process"),
    ("UnsupportedClassVersionError", "the Java runtime is too old for this Kafka (Java 17+)"),
    ("Invalid cluster.id", "the data dir belongs to another cluster (corrupt data dir)"),
    ("No readable meta.properties", "the data dir is not formatted (corrupt data dir)"),
    ("meta.properties", "the data dir's meta.properties is inconsistent (corrupt data dir)"),
    ("No space left on device", "the disk is full"),
    ("OutOfMemoryError", "the JVM ran out of heap (raise SLUICE_KAFKA_HEAP_MB)"),
    ("ClassNotFoundException", "the Kafka classpath is incomplete (remove ~/.cache/sluice)"),
    ("NoClassDefFoundError", "the Kafka classpath is incomplete (remove ~/.cache/sluice)"),
)


def tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a file, or none if it does not exist."""
    if not path.is_file():
        return []
    with path.open(errors="replace") as handle:
        return [line.rstrip("\n") for line in deque(handle, maxlen=count)]


def log_tail(node: NodeSpec, count: int = 15) -> str:
    """The node's last log lines (server log, else the JVM's stdout), indented for quoting."""
    lines = tail_lines(node.server_log, count) or tail_lines(node.stdout_log, count)
    return "\n".join(f"    {line}" for line in lines) or "    (the log is empty)"


def failure_reason(node: NodeSpec) -> str:
    """The most likely cause of a failed start, read from the node's logs."""
    text = "\n".join(tail_lines(node.server_log, 200) + tail_lines(node.stdout_log, 100))
    for needle, reason in _CAUSES:
        if needle in text:
            return reason
    return "see the log below"
