"""Start, stop and inspect a real Apache Kafka (KRaft) cluster on this machine.

The same code serves `sluice kafka up/down/status`, `make demo` and the test fixture,
so what the tests run is what users run. Each node is a JVM started detached (its own
session), so a Ctrl-C in the terminal that ran `up` does not take the broker with it;
the pids live in `cluster.json` next to the data so `down` and `status` find them later.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.diskcheck import check_broker_dir
from pipelines.errors import BrokerUnavailable, LocalKafkaError
from pipelines.localkafka import jars
from pipelines.localkafka.diagnose import failure_reason, log_tail
from pipelines.localkafka.nodes import (
    HOST,
    NodeSpec,
    all_ports,
    layout,
    new_cluster_id,
    server_properties,
)
from pipelines.localkafka.prereq import check_java
from pipelines.localkafka.secure import ADMIN, MECHANISM, SecureMaterial, write_private
from pipelines.settings import LocalKafkaSettings, SecuritySettings, Settings

Progress = Callable[[str], None]


@dataclass
class ClusterState:
    """What `cluster.json` remembers about a local cluster between commands."""

    cluster_id: str
    brokers: int
    base_port: int
    kafka_version: str
    pids: dict[str, int] = field(default_factory=dict)
    secure: bool = False

    @classmethod
    def load(cls, path: Path) -> ClusterState | None:
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            return cls(**raw)
        except (ValueError, TypeError) as exc:
            raise LocalKafkaError(f"{path} is unreadable ({exc}); remove it or purge") from None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


@dataclass(frozen=True)
class UpResult:
    """The outcome of `up`: the bootstrap servers, and whether it was already running."""

    bootstrap: str
    already_running: bool
    seconds: float


class LocalCluster:
    """A local KRaft cluster of 1 or 3 combined broker/controller nodes under one directory."""

    def __init__(
        self,
        root: Path,
        brokers: int | None = None,
        base_port: int | None = None,
        *,
        heap_mb: int | None = None,
        partitions: int = 6,
        secure: bool | None = None,
        progress: Progress = lambda _msg: None,
    ) -> None:
        if brokers not in (None, 1, 3):
            raise LocalKafkaError(f"a local cluster has 1 or 3 brokers, not {brokers}")
        self.root = root
        self.progress = progress
        self.partitions = partitions
        state = ClusterState.load(self.state_file)
        self.brokers = state.brokers if state else (brokers or 1)
        self.base_port = state.base_port if state else (base_port or 9092)
        self.secure = state.secure if state else bool(secure)
        self._requested = (brokers, base_port, secure)
        self.heap_mb = (
            heap_mb or LocalKafkaSettings().heap_mb or (384 if self.brokers == 1 else 256)
        )
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def material(self) -> SecureMaterial:
        """TLS and SCRAM material of a secure cluster (made on its first `up`)."""
        return SecureMaterial(self.root / "secure")

    def client_settings(self, principal: str = ADMIN, **overrides: Any) -> Settings:
        """Settings for a client of this cluster, logged in as `principal` when secure."""
        if not self.secure:
            return Settings(bootstrap_servers=self.bootstrap, **overrides)
        security = SecuritySettings(
            protocol="SASL_SSL",
            sasl_mechanism=MECHANISM,
            username=principal,
            password=self.material.passwords()[principal],
            ca_file=self.material.ca_cert,
        )
        return Settings(bootstrap_servers=self.bootstrap, security=security, **overrides)

    @property
    def nodes(self) -> list[NodeSpec]:
        return layout(self.root, self.brokers, self.base_port)

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def node(self, node_id: int) -> NodeSpec:
        for spec in self.nodes:
            if spec.node_id == node_id:
                return spec
        raise LocalKafkaError(f"no node {node_id} in this {self.brokers}-node cluster")

    # -- lifecycle ---------------------------------------------------------------------

    def up(self, timeout: float = 120.0) -> UpResult:
        """Start every node that is not running and wait until all answer metadata."""
        started = time.monotonic()
        state = ClusterState.load(self.state_file)
        if state is not None:
            self._check_same_shape(state)
        if state is not None and set(self.running_nodes()) == {n.node_id for n in self.nodes}:
            return UpResult(self.bootstrap, True, 0.0)
        check_broker_dir(self.root)  # unwritable or full: one clear StorageError (diskcheck)
        java = check_java()
        pom = jars.local_dir() / "pom.xml"
        classpath = jars.classpath(pom, self.progress)
        if state is None:
            state = self._fresh_state(jars.kafka_version(pom))
        down = [n for n in self.nodes if n.node_id not in self.running_nodes()]
        self._check_ports_free(down)
        for node in down:
            self._prepare(node, state, java, classpath)
        for node in down:
            state.pids[str(node.node_id)] = self._spawn(node, java, classpath)
        state.save(self.state_file)
        self.wait_ready(timeout)
        if self.secure:
            self.material.write_env_files(self.bootstrap)
        return UpResult(self.bootstrap, False, time.monotonic() - started)

    def down(self, *, purge: bool = False, timeout: float = 30.0) -> list[str]:
        """Stop every node (SIGTERM, then SIGKILL after `timeout`); returns what happened."""
        notes = []
        pids = {n.node_id: self._pid(n) for n in self.nodes}
        live = {nid: pid for nid, pid in pids.items() if pid is not None and self._alive(nid)}
        for pid in live.values():
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(self._alive(nid) for nid in live):
            time.sleep(0.2)
        for nid, pid in live.items():
            if self._alive(nid):
                _signal(pid, signal.SIGKILL)
                notes.append(f"node {nid} did not stop within {timeout:.0f}s and was killed")
        for nid in live:
            self._wait_gone(nid, 10.0)
        state = ClusterState.load(self.state_file)
        if state is not None:  # keep the shape (id, ports) so the next `up` reuses the data
            state.pids.clear()
            state.save(self.state_file)
        if purge:
            shutil.rmtree(self.root, ignore_errors=True)
        return notes

    def kill(self, node_id: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal one node (fault tests: SIGKILL without a clean shutdown)."""
        pid = self._pid(self.node(node_id))
        if pid is None or not self._alive(node_id):
            raise LocalKafkaError(f"node {node_id} is not running")
        _signal(pid, sig)
        self._wait_gone(node_id, 30.0)

    def start_node(self, node_id: int, timeout: float = 60.0) -> None:
        """Restart one stopped node with its existing data and wait until it rejoins."""
        state = ClusterState.load(self.state_file)
        if state is None:
            raise LocalKafkaError(f"no local cluster in {self.root}; run `up` first")
        node = self.node(node_id)
        java = check_java()
        classpath = jars.classpath(jars.local_dir() / "pom.xml", self.progress)
        self._check_ports_free([node])
        state.pids[str(node_id)] = self._spawn(node, java, classpath)
        state.save(self.state_file)
        self.wait_ready(timeout)

    def running_nodes(self) -> list[int]:
        """Ids of nodes whose JVM is alive."""
        return [n.node_id for n in self.nodes if self._alive(n.node_id)]

    def state(self) -> ClusterState | None:
        return ClusterState.load(self.state_file)

    # -- readiness ---------------------------------------------------------------------

    def wait_ready(self, timeout: float) -> None:
        """Wait until every running node's broker answers metadata, or explain why not."""
        from pipelines.admin import describe_cluster

        settings = self.client_settings(ADMIN)
        expected = set(self.running_nodes()) or {n.node_id for n in self.nodes}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._raise_if_dead()
            if all(_port_open(self.node(nid).broker_port) for nid in expected):
                try:
                    info = describe_cluster(settings, timeout=3.0)
                    if expected <= {b for b, _ in info.brokers}:
                        return
                except BrokerUnavailable:
                    pass
            time.sleep(0.25)
        node = self.nodes[0]
        raise LocalKafkaError(
            f"Kafka did not answer at {self.bootstrap} within {timeout:.0f}s; "
            f"last lines of {node.server_log}:\n{log_tail(node)}"
        )

    def _raise_if_dead(self) -> None:
        for node in self.nodes:
            proc = self._procs.get(node.node_id)
            if proc is not None and proc.poll() is not None:
                reason = failure_reason(node)
                raise LocalKafkaError(
                    f"Kafka node {node.node_id} exited with code {proc.returncode} during "
                    f"start: {reason}; last lines of {node.server_log}:\n{log_tail(node)}"
                )

    # -- internals ---------------------------------------------------------------------

    def _check_same_shape(self, state: ClusterState) -> None:
        brokers, port, secure = self._requested
        if secure not in (None, state.secure):
            kind = "secure" if state.secure else "plaintext"
            raise LocalKafkaError(
                f"{self.root} holds a {kind} cluster; use `sluice kafka down --purge` first "
                "to change --secure, or another --data-dir"
            )
        if brokers not in (None, state.brokers) or port not in (None, state.base_port):
            raise LocalKafkaError(
                f"{self.root} holds a {state.brokers}-broker cluster on port {state.base_port}, "
                f"not what was asked ({brokers or state.brokers} on {port or state.base_port}); "
                "use `sluice kafka down --purge` first, or another --data-dir"
            )

    def _fresh_state(self, version: str) -> ClusterState:
        cluster_id = _existing_cluster_id(self.nodes) or new_cluster_id()
        if self.secure:
            self.material.ensure()
        return ClusterState(cluster_id, self.brokers, self.base_port, version, secure=self.secure)

    def _check_ports_free(self, nodes: list[NodeSpec]) -> None:
        for port in all_ports(nodes):
            if not _port_free(port):
                raise LocalKafkaError(
                    f"port {port} on {HOST} is already in use by another process "
                    "(another Kafka?); stop it or choose another --port"
                )

    def _prepare(self, node: NodeSpec, state: ClusterState, java: str, classpath: str) -> None:
        node.logs_dir.mkdir(parents=True, exist_ok=True)
        secure = self.material.ensure().server_properties() if self.secure else None
        # written owner-only: in secure mode it holds the broker's SCRAM password
        write_private(
            node.properties_file, server_properties(node, self.nodes, self.partitions, secure)
        )
        meta = node.data_dir / "meta.properties"
        if meta.is_file():
            found = _read_cluster_id(meta)
            if found != state.cluster_id:
                raise LocalKafkaError(
                    f"corrupt data dir: {node.data_dir} belongs to cluster {found}, not "
                    f"{state.cluster_id}; run `sluice kafka down --purge` to start afresh"
                )
            return
        self._format(node, state.cluster_id, java, classpath)

    def _format(self, node: NodeSpec, cluster_id: str, java: str, classpath: str) -> None:
        cmd = [
            java,
            "-Xmx128m",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(node.properties_file),
            *(self.material.scram_format_args() if self.secure else []),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            output = _redact((proc.stdout + proc.stderr).strip(), self).splitlines()[-5:]
            raise LocalKafkaError(
                f"could not format storage of node {node.node_id} in {node.data_dir} "
                f"(corrupt data dir?): {' | '.join(output)}"
            )

    def _spawn(self, node: NodeSpec, java: str, classpath: str) -> int:
        log4j = jars.local_dir() / "log4j2.properties"
        cmd = [
            java,
            "-Xms64m",
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={node.logs_dir}",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(node.properties_file),
        ]
        node.logs_dir.mkdir(parents=True, exist_ok=True)
        with node.stdout_log.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._procs[node.node_id] = proc
        return proc.pid

    def _pid(self, node: NodeSpec) -> int | None:
        state = ClusterState.load(self.state_file)
        return state.pids.get(str(node.node_id)) if state else None

    def _alive(self, node_id: int) -> bool:
        proc = self._procs.get(node_id)
        if proc is not None and proc.poll() is not None:
            return False
        pid = self._pid(self.node(node_id))
        return pid is not None and _is_our_kafka(pid, self.node(node_id).properties_file)

    def _wait_gone(self, node_id: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._alive(node_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        proc = self._procs.pop(node_id, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def _redact(text: str, cluster: LocalCluster) -> str:
    """`text` with every SCRAM password of a secure cluster replaced (errors get printed)."""
    if not cluster.secure or not cluster.material.users_file.is_file():
        return text
    for password in cluster.material.passwords().values():
        text = text.replace(password, "***")
    return text


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _is_our_kafka(pid: int, properties: Path) -> bool:
    """True if `pid` is alive and is the Kafka JVM of this node (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return b"kafka.Kafka" in cmdline and str(properties).encode() in cmdline


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _read_cluster_id(meta: Path) -> str | None:
    for line in meta.read_text().splitlines():
        if line.startswith("cluster.id="):
            return line.split("=", 1)[1].strip()
    return None


def _existing_cluster_id(nodes: list[NodeSpec]) -> str | None:
    for node in nodes:
        meta = node.data_dir / "meta.properties"
        if meta.is_file():
            return _read_cluster_id(meta)
    return None


def free_base_port(count: int = 6, start: int = 20000, stop: int = 32000) -> int:
    """A base port with `count` consecutive free ports after it (tests and parallel runs).

    Below Linux's ephemeral range (32768 and up by default): a port picked there can be
    taken by some client's outgoing connection while a node restarts, and the node then
    fails with "Address already in use" on its own listener.
    """
    import random

    for _ in range(200):
        base = random.randrange(start, stop - count)
        if all(_port_free(base + i) for i in range(count)):
            return base
    raise LocalKafkaError("found no run of free ports on 127.0.0.1")
