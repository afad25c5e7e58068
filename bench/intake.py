"""Intake HTTP throughput and latency, against a bare handler that only produces to Kafka.

  (a) `sluice serve intake`: JSON parse, schema validation, Idempotency-Key, backpressure
      gate, Avro encode, idempotent produce awaited until acknowledged, metrics
  (b) bare: an aiohttp POST handler that reads the body and produces the same
      pre-encoded OrderPlaced bytes with the same producer settings, awaiting the
      delivery report the same way (the ceiling: HTTP + Kafka and nothing else)
  (c) floor, open loop only: an aiohttp POST handler that answers 202 at once, with no
      Kafka at all (what HTTP alone costs in latency on this machine)

The servers run as their own processes. Throughput: a closed loop with N connections
from an aiohttp client in this process. Latency: an open loop at a fixed rate from
`bench.openloop` (a small Go generator when Go is installed), measured from each
request's scheduled time so a stall is not hidden. Rounds rotate the servers' order;
medians and the ratio of medians are printed (for the open-loop p99 also each round's own
ratio, a contender against the other in the same round).

    python -m bench.intake [--seconds 8] [--repeats 3] [--concurrency 32] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from confluent_kafka import Producer

from bench.common import broker, report
from bench.openloop import OpenLoop, OpenLoopResult
from pipelines import admin
from pipelines.runner import free_port
from pipelines.serde import serde_for
from pipelines.settings import BackpressureSettings, Settings
from producers.generator import GeneratorConfig, OrderGenerator

LINGER_MS = 2.0
INTAKE = "(a) sluice serve intake"
BARE = "(b) bare aiohttp + produce"
FLOOR = "(c) floor: aiohttp, no Kafka"
PLACED = "sluice.orders.OrderPlaced"


# --- (b) the bare handler, run as `python -m bench.intake bare --port N` -------------


def bare_app(settings: Settings) -> web.Application:
    """POST /orders: produce one pre-encoded record, answer 202 after its delivery report."""
    topic = settings.topic("orders.placed")
    sample = OrderGenerator(GeneratorConfig(seed=5)).make(0)
    value = serde_for(settings).encode(PLACED, sample, topic=topic)
    producer = Producer(
        settings.confluent_producer(**{"linger.ms": LINGER_MS, "message.timeout.ms": 10_000})
    )
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            producer.poll(0.05)

    counter = iter(range(10**12))

    async def place(request: web.Request) -> web.Response:
        await request.read()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        order_id = f"B-{next(counter)}"

        def delivered(err: Any, _msg: Any) -> None:
            loop.call_soon_threadsafe(_settle, done, err)

        producer.produce(topic, value, order_id.encode(), on_delivery=delivered)
        await done
        return _accepted(order_id)

    async def lifecycle(_app: web.Application) -> Any:
        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        yield
        producer.flush(10)
        stop.set()
        thread.join(2)

    app = _server(place)
    app.cleanup_ctx.append(lifecycle)
    return app


def floor_app() -> web.Application:
    """POST /orders answered 202 at once: the HTTP layer's own latency, no Kafka."""
    counter = iter(range(10**12))

    async def place(request: web.Request) -> web.Response:
        await request.read()
        return _accepted(f"F-{next(counter)}")

    return _server(place)


def _accepted(order_id: str) -> web.Response:
    """The 202 both comparison handlers answer, shaped like the intake's."""
    body = {"order_id": order_id, "status": "ACCEPTED"}
    return web.json_response(body, status=202, headers={"Location": f"/orders/{order_id}"})


def _server(place: Any) -> web.Application:
    """POST /orders with `place`, and the /health the benchmark waits on."""

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/orders", place)
    app.router.add_get("/health", health)
    return app


def _settle(done: asyncio.Future[None], err: Any) -> None:
    if done.done():
        return
    if err is None:
        done.set_result(None)
    else:
        done.set_exception(RuntimeError(str(err)))


# --- the servers as processes --------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/orders"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer within {timeout:.0f}s")

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads) the server process has used so far.

        A figure the other processes on a busy 2-core machine cannot inflate, unlike
        latency: CPU per accepted request compares the two servers' own costs.
        """
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_server(name: str, args: list[str], settings: Settings) -> Server:
    port = free_port()
    env = {**os.environ, **settings.as_env()}
    cmd = [sys.executable, "-m", *args, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
    server = Server(name, port, proc)
    server.wait_ready()
    return server


# --- the load ------------------------------------------------------------------------


@dataclass
class Result:
    accepted: int
    seconds: float
    latencies_ms: list[float]
    statuses: Counter[int]

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Load:
    """Request bodies and unique Idempotency-Keys, shared by every run."""

    def __init__(self, count: int = 5000) -> None:
        gen = OrderGenerator(GeneratorConfig(seed=9, invalid_fraction=0.0))
        keep = ("customer_id", "lines", "currency", "total_cents", "channel")
        self.bodies = [json.dumps({k: gen.make(n)[k] for k in keep}).encode() for n in range(count)]
        self.run = uuid.uuid4().hex[:8]
        self.sent = 0

    def next(self) -> tuple[bytes, dict[str, str]]:
        self.sent += 1
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": f"bench-{self.run}-{self.sent}",
        }
        return self.bodies[self.sent % len(self.bodies)], headers


async def _post(session: ClientSession, url: str, load: Load, origin: float, out: Result) -> None:
    body, headers = load.next()
    async with session.post(url, data=body, headers=headers) as response:
        await response.read()
    out.statuses[response.status] += 1
    if response.status == 202:
        out.accepted += 1
        out.latencies_ms.append((time.perf_counter() - origin) * 1000)


async def closed_loop(url: str, load: Load, seconds: float, concurrency: int) -> Result:
    """`concurrency` connections, each sending the next request as soon as one returns."""
    out = Result(0, seconds, [], Counter())
    connector = TCPConnector(limit=concurrency)
    async with ClientSession(connector=connector, timeout=ClientTimeout(total=30)) as session:
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < deadline:
                await _post(session, url, load, time.perf_counter(), out)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        out.seconds = time.perf_counter() - started
    return out


# --- the benchmark -------------------------------------------------------------------


def bench_settings(bootstrap: str) -> Settings:
    """A private copy of the pipeline topics; backpressure watched but never tripped.

    No order stage runs here, so the lag only grows: a high mark out of reach keeps the
    lag measurement's cost in the intake's figures without ever shedding load.
    """
    marks = BackpressureSettings(high=10**12, low=10**11)
    return Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"bench-intake-{uuid.uuid4().hex[:6]}.",
        partitions=6,
        backpressure=marks,
    )


def run(args: argparse.Namespace) -> None:
    load = Load()
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="sluice-intake-") as tmp:
        settings = bench_settings(bootstrap)
        created = admin.ensure_topics(settings).created
        servers = {
            INTAKE: start_server(
                "intake",
                ["pipelines.cli", "serve", "intake", "--linger-ms", str(LINGER_MS)],
                settings,
            ),
            BARE: start_server("bare", ["bench.intake", "bare"], settings),
        }
        try:
            _closed(servers, load, args)
            servers[FLOOR] = start_server("floor", ["bench.intake", "floor"], settings)
            _open(servers, OpenLoop(load.bodies, Path(tmp)), args)
        finally:
            for server in servers.values():
                server.stop()
            admin.delete_topics(settings, created)


def _closed(servers: dict[str, Server], load: Load, args: argparse.Namespace) -> None:
    """Throughput: accepted requests/s with N connections, and CPU per request."""
    for server in servers.values():  # warm both up: connections, producer, JIT-free caches
        asyncio.run(closed_loop(server.url, load, 2.0, args.concurrency))
    rates: dict[str, list[float]] = {name: [] for name in servers}
    latency: dict[str, list[Result]] = {name: [] for name in servers}
    cpu: dict[str, list[float]] = {name: [] for name in servers}
    for round_ in range(args.repeats):
        for name, server in rotated(servers, round_):
            before = server.cpu_s()
            result = asyncio.run(closed_loop(server.url, load, args.seconds, args.concurrency))
            cpu[name].append((server.cpu_s() - before) * 1000 / max(1, result.accepted))
            rates[name].append(result.rate)
            latency[name].append(result)
    report(
        f"Intake, closed loop: {args.concurrency} connections, {args.seconds:.0f}s rounds",
        rates,
        INTAKE,
        unit="accepted req/s",
    )
    for name, results in latency.items():
        p50 = statistics.median(r.quantile(0.5) for r in results)
        p99 = statistics.median(r.quantile(0.99) for r in results)
        codes = dict(sum((r.statuses for r in results), Counter()))
        print(f"  {name:<34} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms   statuses {codes}")
    for name, per in cpu.items():
        print(f"  {name:<34} server CPU {statistics.median(per):.3f} ms per accepted request")


def _open(servers: dict[str, Server], loop: OpenLoop, args: argparse.Namespace) -> None:
    """Latency at a fixed arrival rate: medians over rounds, with the p99 of each round."""
    for server in servers.values():
        loop.run(server.url, min(args.rate, 300.0), 2.0)  # warm-up, not counted
    results: dict[str, list[OpenLoopResult]] = {name: [] for name in servers}
    for round_ in range(args.repeats):
        for name, server in rotated(servers, round_):
            results[name].append(loop.run(server.url, args.rate, args.seconds))
    print(
        f"\nIntake, open loop at {args.rate:,.0f} req/s, {args.repeats} rounds of "
        f"{args.seconds:.0f}s, load from {loop.generator}"
    )
    for name, rounds_ in results.items():
        statuses: Counter[str] = Counter()
        for r in rounds_:
            statuses.update(r.statuses)
        p99s = ", ".join(f"{r.p99_ms:.1f}" for r in rounds_)
        print(
            f"  {name:<34} accepted {statistics.median(r.rate for r in rounds_):7,.0f} req/s"
            f"  p50 {statistics.median(r.p50_ms for r in rounds_):6.2f} ms"
            f"  p99 {statistics.median(r.p99_ms for r in rounds_):6.2f} ms (rounds: {p99s})"
            f"  max {max(r.max_ms for r in rounds_):7.2f} ms"
            f"   statuses {dict(statuses)} errors {sum(r.errors for r in rounds_)}"
        )
    if INTAKE in results and BARE in results:
        median, per_round = p99_ratio(results)
        rounds_text = ", ".join(f"{r:.2f}" for r in per_round)
        print(f"  p99 ratio (a)/(b): {median:.2f} (each round: {rounds_text})")


def rotated(servers: dict[str, Server], round_: int) -> list[tuple[str, Server]]:
    """The servers in this round's order: each round starts one later.

    In a fixed order one contender would always run first after the previous round's
    last (the broker's segment rolls, log flushes and JIT work fall where they fall),
    and its rounds would share whatever that position costs; rotating spreads it.
    """
    items = list(servers.items())
    shift = round_ % len(items)
    return items[shift:] + items[:shift]


def p99_ratio(results: dict[str, list[OpenLoopResult]]) -> tuple[float, list[float]]:
    """(a)/(b) open-loop p99: the ratio of the medians, and each round's own ratio."""
    ours, peer = results[INTAKE], results[BARE]
    median = statistics.median(r.p99_ms for r in ours) / statistics.median(r.p99_ms for r in peer)
    return median, [a.p99_ms / b.p99_ms for a, b in zip(ours, peer, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    sub = parser.add_subparsers(dest="mode")
    for mode, what in (("bare", "the bare handler"), ("floor", "the no-Kafka floor")):
        server = sub.add_parser(mode, help=f"run {what} (used by the benchmark itself)")
        server.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1000.0)
    args = parser.parse_args()
    if args.mode in ("bare", "floor"):
        app = bare_app(Settings()) if args.mode == "bare" else floor_app()
        web.run_app(app, host="127.0.0.1", port=args.port, print=None)
        return
    run(args)


if __name__ == "__main__":
    main()
