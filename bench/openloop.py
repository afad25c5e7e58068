"""Open-loop HTTP load: POSTs at a fixed rate, latency from each request's scheduled time.

A latency target ("p99 under 20 ms at 1,000 requests/s") is about a server under a
steady arrival rate, so requests go out on schedule whatever the answers, and a
request's latency counts from when it was due, not when it left: a stall anywhere is
counted, never hidden.

The load comes from the Go program in `bench/loadgen/` when the machine has Go: built
once into a temporary directory, it spends a small fraction of the CPU that a Python
client would, which matters when client, server and broker share two cores. Without
Go, an aiohttp client in this process does the same, and the report says which ran.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, TCPConnector

SOURCE = Path(__file__).parent / "loadgen" / "main.go"


@dataclass
class OpenLoopResult:
    """What one open-loop round saw: accepted (202) requests and their latency."""

    accepted: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int] = field(default_factory=dict)
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


class OpenLoop:
    """Runs rounds against a URL with the Go generator, or the Python one without Go."""

    def __init__(self, bodies: list[bytes], workdir: Path) -> None:
        self.bodies_file = workdir / "bodies.jsonl"
        self.bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
        self.bodies = bodies
        self.binary = _build(workdir)

    @property
    def generator(self) -> str:
        return "bench/loadgen (Go)" if self.binary else "aiohttp client (Python; no Go found)"

    def run(self, url: str, rate: float, seconds: float) -> OpenLoopResult:
        if self.binary is None:
            return asyncio.run(_python_open_loop(url, self.bodies, rate, seconds))
        cmd = [str(self.binary), "-url", url, "-rate", str(rate), "-seconds", str(seconds)]
        cmd += ["-bodies", str(self.bodies_file), "-key-prefix", f"bench-{uuid.uuid4().hex}"]
        limit = seconds + 120
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=limit)
        if done.returncode != 0:
            raise RuntimeError(f"loadgen failed: {done.stderr.strip()}")
        out = json.loads(done.stdout)
        return OpenLoopResult(
            accepted=out["accepted"],
            seconds=out["seconds"],
            p50_ms=out["p50_ms"],
            p99_ms=out["p99_ms"],
            max_ms=out["max_ms"],
            statuses=out["statuses"],
            errors=out["errors"],
        )


def _build(workdir: Path) -> Path | None:
    """Compile the Go generator (standard library only: no module download)."""
    go = shutil.which("go")
    if go is None:
        return None
    binary = workdir / "loadgen"
    done = subprocess.run(
        [go, "build", "-o", str(binary), str(SOURCE)], check=False, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"cannot build {SOURCE}: {done.stderr.strip()}")
    return binary


async def _python_open_loop(
    url: str, bodies: list[bytes], rate: float, seconds: float
) -> OpenLoopResult:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    run = uuid.uuid4().hex[:8]

    async def post(session: ClientSession, i: int, scheduled: float) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"bench-{run}-{i}"}
        async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as response:
            await response.read()
        statuses[str(response.status)] += 1
        if response.status == 202:
            latencies.append((time.perf_counter() - scheduled) * 1000)

    connector = TCPConnector(limit=512)
    async with ClientSession(connector=connector, timeout=ClientTimeout(total=30)) as session:
        tasks = set()
        start = time.perf_counter() + 0.05
        for i in range(int(rate * seconds)):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(post(session, i, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    ordered = sorted(latencies)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")

    return OpenLoopResult(len(ordered), elapsed, q(0.5), q(0.99), q(1.0), dict(statuses))
