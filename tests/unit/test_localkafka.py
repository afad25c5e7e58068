from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.errors import PrerequisiteError
from pipelines.localkafka import diagnose, nodes
from pipelines.localkafka.jars import kafka_version, local_dir
from pipelines.localkafka.prereq import parse_java_major


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "25.0.1"', 25),
    ],
)
def test_java_version_parsing(output: str, major: int) -> None:
    assert parse_java_major(output) == major


def test_unreadable_java_version_is_a_clear_error() -> None:
    with pytest.raises(PrerequisiteError, match="cannot read the Java version"):
        parse_java_major("command not found")


def test_three_node_layout_uses_consecutive_loopback_ports(tmp_path: Path) -> None:
    layout = nodes.layout(tmp_path, 3, 9092)
    assert [(n.node_id, n.broker_port, n.controller_port) for n in layout] == [
        (1, 9092, 9093),
        (2, 9094, 9095),
        (3, 9096, 9097),
    ]
    assert nodes.all_ports(layout) == list(range(9092, 9098))


def test_server_properties_for_a_three_node_quorum(tmp_path: Path) -> None:
    layout = nodes.layout(tmp_path, 3, 9092)
    props = dict(
        line.split("=", 1)
        for line in nodes.server_properties(layout[1], layout, 6).splitlines()
        if "=" in line
    )
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert props["min.insync.replicas"] == "2"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["auto.create.topics.enable"] == "false"


def test_single_node_keeps_replication_at_one(tmp_path: Path) -> None:
    layout = nodes.layout(tmp_path, 1, 9092)
    text = nodes.server_properties(layout[0], layout, 6)
    assert "default.replication.factor=1" in text
    assert "min.insync.replicas=1" in text


def test_cluster_ids_are_kafka_shaped_and_random() -> None:
    ids = {nodes.new_cluster_id() for _ in range(500)}
    assert len(ids) == 500
    assert all(len(i) == 22 and "=" not in i and not i.startswith("-") for i in ids)


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        ("java.net.BindException: Address already in use", "already in use"),
        ("Exception in thread main java.lang.UnsupportedClassVersionError: x", "too old"),
        ("Invalid cluster.id in: /data/meta.properties", "corrupt data dir"),
        ("java.io.IOException: No space left on device", "disk is full"),
        ("something else entirely", "see the log"),
    ],
)
def test_failure_reasons_are_read_from_the_log(tmp_path: Path, log: str, reason: str) -> None:
    node = nodes.layout(tmp_path, 1, 9092)[0]
    node.logs_dir.mkdir(parents=True)
    node.server_log.write_text("[INFO] starting\n" + log + "\n")
    assert reason in diagnose.failure_reason(node)
    assert log in diagnose.log_tail(node)


def test_pom_pins_a_kafka_4_release() -> None:
    version = kafka_version(local_dir() / "pom.xml")
    assert version.startswith("4.")
