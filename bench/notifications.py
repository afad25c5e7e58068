"""Notification throughput against a slow provider: agent concurrency and a second worker.

The same local HTTP provider answers every SMS after 50 ms. Each round drains a fresh
backlog of SMS tasks through `sluice worker notifications` processes, timed from the
first task produced to the last receipt at the provider:

  (a) one worker, concurrency 1       (one send in flight per worker: the serial baseline)
  (b) one worker, concurrency N       (N actors per channel agent)
  (c) two workers, concurrency N      (the group splits the 6 partitions 3/3)

Rate limits are set far above what is reached, so only the provider's latency and the
stage's own cost (two acknowledged table writes per send) bound the rate.

    python -m bench.notifications [--sends 800] [--concurrency 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

from bench.common import broker, report, rounds
from pipelines import admin
from pipelines.providers import (
    HttpProviderConfig,
    ProvidersConfig,
    ProvidersHandle,
    providers_in_thread,
)
from pipelines.runner import Fleet
from pipelines.serde import serde_for
from pipelines.settings import NotificationSettings, Settings

REQUESTED = "sluice.notifications.NotificationRequested"


def drain(
    bootstrap: str,
    handle: ProvidersHandle,
    tmp: Path,
    *,
    sends: int,
    concurrency: int,
    workers: int,
) -> float:
    """Sends per second for one backlog of `sends` SMS through `workers` fresh workers."""
    run = uuid.uuid4().hex[:6]
    settings = Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"bn{run}.",
        data_dir=tmp / run,
        notifications=NotificationSettings(concurrency=concurrency, rate_sms=100_000.0),
        delivery=handle.delivery_settings(http_timeout_s=10.0),
    )
    admin.ensure_topics(settings)
    fleet = Fleet(settings, tmp / run / "logs")
    try:
        started = [fleet.start("notifications") for _ in range(workers)]
        for worker in started + started:  # twice: the first may be ready before the rebalance
            worker.wait_ready()
        begin = time.monotonic()
        _produce(settings, run, sends)
        deadline = begin + 600
        while _received(handle, run) < sends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {_received(handle, run)} of {sends} sends arrived")
            time.sleep(0.05)
        return sends / (time.monotonic() - begin)
    finally:
        notes = fleet.stop_all()
        if notes:
            print("  note:", "; ".join(notes))
        with contextlib.suppress(Exception):
            names = [t for t in admin.list_topics(settings) if t.startswith(settings.topic_prefix)]
            admin.delete_topics(settings, names)


def _produce(settings: Settings, run: str, count: int) -> None:
    serde = serde_for(settings)
    topic = settings.topic("notifications.sms")
    producer = Producer(settings.confluent_producer(**{"linger.ms": 5}))
    now = int(time.time() * 1000)
    for i in range(count):
        nid = f"{run}-{i}:order_confirmed:SMS"
        task = {
            "notification_id": nid,
            "order_id": f"{run}-{i}",
            "channel": "SMS",
            "recipient": f"+1555{i:07d}",
            "template": "order_confirmed",
            "params": {"order_id": f"{run}-{i}", "customer_id": "C-1", "total": "9.99 EUR"},
            "attempt": 1,
            "not_before": now,
            "created_at": now,
            "last_error": None,
        }
        producer.produce(topic, serde.encode(REQUESTED, task, topic=topic), nid.encode())
        producer.poll(0)
    producer.flush(30)


def _received(handle: ProvidersHandle, run: str) -> int:
    return sum(1 for r in handle.receipts.receipts() if r.notification_id.startswith(run))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sends", type=int, default=800, help="Backlog per round (N actors).")
    parser.add_argument("--serial-sends", type=int, default=120, help="Backlog at concurrency 1.")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    n = args.concurrency
    config = ProvidersConfig(
        smtp_port=0, http_port=0, http=HttpProviderConfig(latency_ms=args.latency_ms)
    )
    with (
        broker() as bootstrap,
        providers_in_thread(config) as handle,
        tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp,
    ):
        root = Path(tmp)
        serial, parallel, two = (
            "(a) 1 worker, concurrency 1",
            f"(b) 1 worker, concurrency {n}",
            f"(c) 2 workers, concurrency {n}",
        )
        results = rounds(
            {
                serial: lambda: drain(
                    bootstrap, handle, root, sends=args.serial_sends, concurrency=1, workers=1
                ),
                parallel: lambda: drain(
                    bootstrap, handle, root, sends=args.sends, concurrency=n, workers=1
                ),
                two: lambda: drain(
                    bootstrap, handle, root, sends=args.sends, concurrency=n, workers=2
                ),
            },
            args.repeats,
        )
        title = f"SMS through a provider answering in {args.latency_ms} ms, 6 partitions"
        report(f"{title}: concurrency", {k: results[k] for k in (parallel, serial)}, parallel,
               unit="sends/s")  # fmt: skip
        report(f"{title}: workers", {k: results[k] for k in (two, parallel)}, two, unit="sends/s")
        assert handle.receipts.duplicates() == {}, "a provider got an id twice"


if __name__ == "__main__":
    main()
