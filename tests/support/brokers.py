"""Where the test suite's Kafka comes from, in order of preference.

1. `KAFKA_BOOTSTRAP_SERVERS`: an existing cluster (CI elsewhere, a developer's broker).
2. A testcontainers `KafkaContainer` (KRaft), when a Docker engine answers.
3. The local Apache Kafka started by the same code as `sluice kafka up`, on free ports in
   a temporary directory, stopped when the session ends. Machines without a container
   engine (ours) always take this path, so it must always work.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pipelines.localkafka import LocalCluster, free_base_port

KAFKA_IMAGE = os.environ.get("SLUICE_TEST_KAFKA_IMAGE", "confluentinc/cp-kafka:7.6.0")


def docker_unavailable_reason() -> str | None:
    """None when a Docker engine answers a ping; otherwise why not, for the skip message."""
    try:
        import docker
    except ImportError:
        return "the docker SDK is not installed"
    try:
        client = docker.from_env(timeout=3)
        client.ping()
    except Exception as exc:  # the SDK raises many kinds; any means "no engine here"
        return f"no Docker engine answers ({type(exc).__name__})"
    return None


@contextlib.contextmanager
def kafka_container() -> Iterator[str]:
    """A KRaft Kafka in a container via testcontainers; yields its bootstrap servers."""
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer(KAFKA_IMAGE).with_kraft() as container:
        yield container.get_bootstrap_server()


@contextlib.contextmanager
def local_kafka(root: Path, brokers: int = 1) -> Iterator[LocalCluster]:
    """The local broker(s) on free ports under `root`; always stopped afterwards."""
    cluster = LocalCluster(root, brokers, free_base_port(2 * brokers))
    try:
        cluster.up(timeout=180)
        yield cluster
    finally:
        cluster.down(timeout=20)


@contextlib.contextmanager
def session_kafka(root: Path) -> Iterator[tuple[str, str]]:
    """Bootstrap servers for the session and a word on where they came from."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        yield env, "KAFKA_BOOTSTRAP_SERVERS"
        return
    if docker_unavailable_reason() is None:
        with kafka_container() as bootstrap:
            yield bootstrap, f"testcontainers ({KAFKA_IMAGE})"
        return
    with local_kafka(root) as cluster:
        yield cluster.bootstrap, f"local Apache Kafka in {root}"
