"""The shape of a local KRaft cluster: node ids, ports, directories and server.properties.

Every node is a combined broker and controller, so one process per node is all a
three-node cluster needs, and killing any node (the active controller included) is a
real failover. Ports are laid out from one base: node i listens for clients on
`base + 2i` and for the controller quorum on `base + 2i + 1`, all on 127.0.0.1.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipelines.catalog import min_insync_replicas, replication_for

HOST = "127.0.0.1"


@dataclass(frozen=True)
class NodeSpec:
    """One node of the local cluster."""

    node_id: int
    broker_port: int
    controller_port: int
    home: Path

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def stdout_log(self) -> Path:
        return self.logs_dir / "stdout.log"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.broker_port}"


def layout(root: Path, brokers: int, base_port: int) -> list[NodeSpec]:
    """Nodes for a cluster of `brokers` nodes under `root`, ports counted from `base_port`."""
    return [
        NodeSpec(i + 1, base_port + 2 * i, base_port + 2 * i + 1, root / f"node-{i + 1}")
        for i in range(brokers)
    ]


def all_ports(nodes: list[NodeSpec]) -> list[int]:
    """Every port the cluster listens on."""
    return [p for n in nodes for p in (n.broker_port, n.controller_port)]


def new_cluster_id() -> str:
    """A random cluster id in Kafka's form: 16 random bytes, URL-safe base64, unpadded.

    Like Kafka's own generator it never starts with "-", which command-line parsers
    would take for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def server_properties(
    node: NodeSpec,
    nodes: list[NodeSpec],
    partitions: int,
    secure: dict[str, str] | None = None,
) -> str:
    """server.properties for one node, sized for a small machine.

    Auto topic creation is off: pipeline topics come from the catalog with the partition
    count Faust's co-partitioning checks expect, never from a producer's first send.
    With `secure` (from `SecureMaterial.server_properties`), the client listener is
    SASL_SSL (SCRAM) and the controller listener mutual TLS, so no port takes a client
    without credentials; otherwise both are PLAINTEXT on loopback.
    """
    client = "SASL_SSL" if secure else "PLAINTEXT"
    controller = "SSL" if secure else "PLAINTEXT"
    rf = replication_for(len(nodes))
    isr = min_insync_replicas(rf)
    voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in nodes)
    props = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"{client}://{HOST}:{node.broker_port},CONTROLLER://{HOST}:{node.controller_port}",
        "advertised.listeners": f"{client}://{HOST}:{node.broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": client,
        "listener.security.protocol.map": f"{client}:{client},CONTROLLER:{controller}",
        "log.dirs": node.data_dir,
        "auto.create.topics.enable": "false",
        "num.partitions": partitions,
        "default.replication.factor": rf,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": rf,
        "offsets.topic.num.partitions": 10,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "transaction.state.log.num.partitions": 10,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
        "group.initial.rebalance.delay.ms": 0,
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
        "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
        "log.cleaner.threads": 1,
        **(secure or {}),
    }
    lines = ["# Written by `sluice kafka up`; regenerated on every start."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"
