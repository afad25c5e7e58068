"""What Faust itself costs per record: the floor under every Faust stage.

The order stage's target is half the throughput of a bare aiokafka loop doing the same
work. This benchmark measures how close *any* Faust stage can come, with no work at all:
the same backlog of N raw records (80 bytes, 6 partitions) is

  (a) forwarded by a one-agent Faust app (`bench.floorapp`: consume, send unchanged)
  (b) forwarded by a bare aiokafka loop (getmany, send unchanged)
  (c) only read by the same Faust app (no send), for the consume path alone

each measured from its first record to its N-th, with the CPU time per record of the
process doing it. Rounds alternate; the ratio of medians is printed.

    python -m bench.faust_floor [--records 30000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.common import broker, report, rounds
from pipelines.runner import free_port

PARTITIONS = 6
VALUE = b"x" * 80
CPU: dict[str, list[float]] = {}  # contender -> CPU seconds per record, per round


def backlog(bootstrap: str, records: int) -> str:
    """A fresh topic (and its .out) holding `records` records."""
    name = f"floor-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(t, PARTITIONS, 1) for t in (name, f"{name}.out")]
    for future in admin.create_topics(new).values():
        future.result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(records):
        producer.produce(name, key=str(i).encode(), value=VALUE)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("the backlog was not acknowledged within 60 s")
    return name


def faust_run(bootstrap: str, records: int, forward: bool, tmp: Path, label: str) -> float:
    """Start `bench.floorapp` on a fresh backlog and wait for its figures."""
    topic = backlog(bootstrap, records)
    out = tmp / f"{topic}.out"
    env = {
        **os.environ,
        "FLOOR_BROKER": f"kafka://{bootstrap}",
        "FLOOR_TOPIC": topic,
        "FLOOR_RECORDS": str(records),
        "FLOOR_MODE": "forward" if forward else "read",
        "FLOOR_OUT": str(out),
        "FLOOR_WEB_PORT": str(free_port()),
    }
    cmd = [sys.executable, "-m", "faust", "-A", "bench.floorapp:app", "worker", "-l", "info"]
    log = (tmp / f"{topic}.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not (out.exists() and out.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Faust app did not finish; see {log.name}")
            time.sleep(0.2)
        rate, cpu = (float(x) for x in out.read_text().split())
        CPU.setdefault(label, []).append(cpu)
        return rate
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def bare_run(bootstrap: str, records: int, label: str) -> float:
    """The same forwarding in a plain aiokafka loop, in this process."""
    topic = backlog(bootstrap, records)
    return asyncio.run(_bare(bootstrap, topic, records, label))


async def _bare(bootstrap: str, topic: str, records: int, label: str) -> float:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=topic, auto_offset_reset="earliest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50)
    await consumer.start()
    await producer.start()
    seen, started, cpu = 0, 0.0, 0.0
    try:
        while seen < records:
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            for partition_records in batch.values():
                for record in partition_records:
                    if seen == 0:
                        started, cpu = time.monotonic(), time.process_time()
                    seen += 1
                    await producer.send(f"{topic}.out", record.value, key=record.key)
        rate = records / (time.monotonic() - started)
        CPU.setdefault(label, []).append((time.process_time() - cpu) / records)
        return rate
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    a = "(a) Faust agent: consume + send"
    b = "(b) bare aiokafka: consume + send"
    c = "(c) Faust agent: consume only"
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="sluice-floor-") as tmp:
        root = Path(tmp)
        runs: dict[str, Callable[[], float]] = {
            a: lambda: faust_run(bootstrap, args.records, True, root, a),
            b: lambda: bare_run(bootstrap, args.records, b),
            c: lambda: faust_run(bootstrap, args.records, False, root, c),
        }
        results = rounds(runs, args.repeats)
    report(f"Forward {args.records:,} raw records, {PARTITIONS} partitions", results, a, "rec/s")
    for name, values in CPU.items():
        print(f"  CPU per record, {name}: {statistics.median(values) * 1e6:,.0f} µs")


if __name__ == "__main__":
    main()
