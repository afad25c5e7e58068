"""Stage workers as child processes: how the demo (and the tests) run a whole pipeline.

Each worker is `python -m pipelines.cli worker STAGE` with its own web port, table
directory and log file, configured through the environment from one Settings object.
Stopping is always bounded (SIGTERM, then SIGKILL), and every worker started here is
stopped by `stop_all`, so nothing outlives the run that started it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import SluiceError
from pipelines.settings import Settings


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stage_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a worker process see the same Settings."""
    return settings.as_env()


@dataclass
class StageProcess:
    """One running worker: its process, name, web port and log file."""

    stage: str
    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]
    killed: bool = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def get_json(self, path: str) -> dict[str, Any] | None:
        """GET one of the worker's JSON endpoints, or None while it does not answer."""
        try:
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=2) as response:
                return dict(json.loads(response.read()))
        except (OSError, ValueError):
            return None

    def metric(self, name: str) -> float:
        """The sum of a Prometheus metric's samples on the worker's /metrics."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            lines = response.read().decode().splitlines()
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(name + "{"))

    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        """Wait until /health reports partitions assigned and no rebalance in progress."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise SluiceError(f"worker {self.name} exited; log:\n{self.output()[-2000:]}")
            body = self.get_json("/health")
            if body and body.get("assigned_partitions") and not body.get("rebalancing"):
                return body
            time.sleep(0.5)
        raise SluiceError(f"worker {self.name} not ready after {timeout:.0f}s; see {self.log}")

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.killed = True
                self.proc.wait(timeout=10)
        return int(self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL: the crash case (the worker's Faust child dies with it)."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class Fleet:
    """The workers of one run."""

    settings: Settings
    logs: Path
    workers: list[StageProcess] = field(default_factory=list)

    def start(
        self,
        stage: str,
        name: str | None = None,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> StageProcess:
        name = name or f"{stage}-{sum(w.stage == stage for w in self.workers) + 1}"
        port = port or free_port()
        log = self.logs / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pipelines.cli",
            "worker",
            stage,
            "--web-port",
            str(port),
            "--name",
            name,
            "--loglevel",
            "info",
            "--stop-timeout",
            "20",
        ]
        env = {**os.environ, **stage_env(self.settings), **(extra_env or {})}
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        worker = StageProcess(stage, name, port, log, proc)
        self.workers.append(worker)
        return worker

    def wait_settled(self, timeout: float = 90.0) -> bool:
        """Wait until every worker has partitions and none is rebalancing, twice in a row
        a second apart; False if that did not happen within `timeout`.

        A worker that joins late rebalances its group, which stops the group's processing
        for a while: work sent before the group settled would measure the rebalance.
        """
        deadline = time.monotonic() + timeout
        calm = 0
        while calm < 2 and time.monotonic() < deadline:
            for worker in self.workers:
                worker.wait_ready()
            bodies = [worker.get_json("/health") or {} for worker in self.workers]
            steady = all(b.get("assigned_partitions") and not b.get("rebalancing") for b in bodies)
            calm = calm + 1 if steady else 0
            if calm < 2:
                time.sleep(1.0)
        return calm >= 2

    def stop_all(self, timeout: float = 40.0) -> list[str]:
        """Stop every worker; returns a note for each that had to be killed."""
        for worker in self.workers:
            if worker.alive():
                worker.proc.send_signal(signal.SIGTERM)
        notes = []
        for worker in self.workers:
            worker.stop(timeout)
            if worker.killed:
                notes.append(f"{worker.name} did not stop within {timeout:.0f}s and was killed")
        return notes
