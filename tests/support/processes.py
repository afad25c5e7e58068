"""Child processes a test starts and is sure to stop (workers, CLIs, servers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Child:
    """A started process with its log file; `stop` is bounded: SIGTERM, then SIGKILL."""

    proc: subprocess.Popen[bytes]
    log: Path
    name: str
    killed: bool = field(default=False)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        """Ask politely, wait, then force; returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.killed = True
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL with no chance to commit: the crash case."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None, name: str = "") -> Child:
    """Start `cmd` from the repo root with its output in `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Child(proc, log, name or cmd[0])


def python(*args: str) -> list[str]:
    """A command line running this interpreter."""
    return [sys.executable, *args]


def wait_for(predicate: object, timeout: float, interval: float = 0.2, what: str = "") -> None:
    """Poll `predicate()` until true or fail the test with `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
