"""Broker faults on a local cluster: SIGKILL a node (the active controller every other
time), restart it, repeat. Used by the failover test and `bench/failover.py`.

The active KRaft controller is read from the nodes' own logs (the last "Completed
transition to Leader" of the Raft manager): clients cannot see it, since Kafka's
DescribeCluster names a random broker as "controller" in KRaft mode.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from dataclasses import dataclass, field

from pipelines.localkafka.cluster import LocalCluster

_TRANSITION = re.compile(r"\[RaftManager id=(\d+)\] Completed transition to (\w+)")


def active_controller(cluster: LocalCluster) -> int | None:
    """The node whose Raft manager last became Leader and has not left that state since."""
    running = set(cluster.running_nodes())
    for node in cluster.nodes:
        if node.node_id not in running or not node.server_log.exists():
            continue
        last = None
        with node.server_log.open(errors="replace") as log:
            for line in log:
                match = _TRANSITION.search(line)
                if match:
                    last = match.group(2)
        if last == "Leader":
            return node.node_id
    return None


@dataclass
class Fault:
    """One kill and restart."""

    node_id: int
    was_controller: bool
    killed_at: float  # time.monotonic()
    restarted_at: float | None = None


@dataclass
class BrokerChaos:
    """A thread that SIGKILLs a node every `period_s` and restarts it after `down_s`."""

    cluster: LocalCluster
    period_s: float = 20.0
    down_s: float = 5.0
    faults: list[Fault] = field(default_factory=list)
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="broker-chaos", daemon=True)
        self._thread.start()

    def stop(self) -> list[Fault]:
        """Stop after the current fault (its node is restarted); returns every fault."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.down_s + 120)
        return self.faults

    def _run(self) -> None:
        round_ = 0
        while not self._stop.wait(self.period_s if round_ else self.period_s / 2):
            try:
                self._one_fault(round_)
            except Exception as exc:  # surfaced by the caller; the cluster may be degraded
                self.error = f"fault {round_}: {exc}"
                return
            round_ += 1

    def _one_fault(self, round_: int) -> None:
        controller = active_controller(self.cluster)
        running = self.cluster.running_nodes()
        others = [n for n in running if n != controller]
        want_controller = round_ % 2 == 0 and controller is not None
        victim = controller if want_controller or not others else others[round_ % len(others)]
        assert victim is not None
        fault = Fault(victim, victim == controller, time.monotonic())
        self.faults.append(fault)
        self.cluster.kill(victim, signal.SIGKILL)
        time.sleep(self.down_s)
        self.cluster.start_node(victim)
        fault.restarted_at = time.monotonic()
