"""Failover: the pipeline on a three-node KRaft cluster, without and with broker kills.

Both rounds run one order worker and one notification worker against the same local
cluster (RF=3, min.insync.replicas=2, idempotent producers with acks=all) and produce the
same orders at the same rate. In the second round a broker is SIGKILLed every
`--period` seconds (the active controller every other time) and restarted `--down`
seconds later. Every second the benchmark counts orders that reached their terminal
event, and prints:

- orders ended per second over the run, both rounds, and their ratio;
- per fault: the dip (lowest 5 s throughput after the kill, against the no-fault
  median) and the time to recover (from the kill until a 5 s window is back at 80% of
  the no-fault median);
- that every order ended exactly once in both rounds.

    python -m bench.failover [--orders 2400] [--rate 30] [--period 20] [--down 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import machine
from pipelines import admin
from pipelines.demo_watch import Follower
from pipelines.localkafka import LocalCluster, free_base_port
from pipelines.localkafka.chaos import BrokerChaos, Fault
from pipelines.providers import ProvidersConfig, providers_in_thread
from pipelines.runner import Fleet
from pipelines.settings import Settings
from producers.generator import GeneratorConfig
from producers.inventory import seed_inventory
from producers.orders import OrderRun, produce_orders

WINDOW_S = 5


@dataclass
class Round:
    """What one round saw: orders ended per second since the first order was sent."""

    faults: list[Fault] = field(default_factory=list)
    ended_per_s: list[int] = field(default_factory=list)
    ended: int = 0
    duplicates: int = 0
    elapsed_s: float = 0.0
    begin: float = 0.0


def one_round(cluster: LocalCluster, tmp: Path, args: argparse.Namespace, chaos: bool) -> Round:
    out = Round()
    with providers_in_thread(ProvidersConfig(smtp_port=0, http_port=0)) as handle:
        run = uuid.uuid4().hex[:6]
        settings = Settings(
            bootstrap_servers=cluster.bootstrap,
            topic_prefix=f"bf{run}.",
            data_dir=tmp / run,
            delivery=handle.delivery_settings(),
        )
        admin.ensure_topics(settings)
        seed_inventory(settings, 200, scale=50)
        fleet = Fleet(settings, tmp / run / "logs")
        follower = Follower(settings)
        try:
            for stage in ("orders", "notifications"):
                fleet.start(stage).wait_ready(timeout=180)
            follower.start()
            _drive(settings, cluster, follower, args, chaos=chaos, out=out)
        finally:
            follower.stop()
            for note in fleet.stop_all():
                print("  note:", note)
    return out


def _drive(
    settings: Settings,
    cluster: LocalCluster,
    follower: Follower,
    args: argparse.Namespace,
    *,
    chaos: bool,
    out: Round,
) -> None:
    faults = BrokerChaos(cluster, period_s=args.period, down_s=args.down) if chaos else None
    order_run = OrderRun(count=args.orders, rate=args.rate, generator=GeneratorConfig(seed=9))
    feeder = threading.Thread(target=produce_orders, args=(settings, order_run), daemon=True)
    out.begin = time.monotonic()
    feeder.start()
    if faults is not None:
        faults.start()
    deadline = out.begin + args.orders / args.rate * 3 + 120
    last = 0
    while time.monotonic() < deadline:
        time.sleep(1.0)
        ended, _results, out.duplicates = follower.counts()
        out.ended_per_s.append(ended - last)
        last = ended
        if not feeder.is_alive() and faults is not None and faults.faults:
            out.faults = faults.stop()
            faults = None
        if not feeder.is_alive() and ended >= args.orders:
            break
    if faults is not None:
        out.faults = faults.stop()
    out.ended, out.elapsed_s = last, time.monotonic() - out.begin


def windows(per_s: list[int]) -> list[float]:
    """Throughput over sliding WINDOW_S-second windows."""
    return [sum(per_s[i : i + WINDOW_S]) / WINDOW_S for i in range(max(0, len(per_s) - WINDOW_S))]


def _report(calm: Round, faulty: Round, args: argparse.Namespace) -> None:
    busy = windows(calm.ended_per_s)[2 : int(args.orders / args.rate)]
    baseline = statistics.median(busy) if busy else 0.0
    print(
        f"\nFailover: {args.orders} orders at {args.rate}/s, 3 brokers, a kill every "
        f"{args.period}s, down {args.down}s  ({machine()})"
    )
    for name, r in (("no faults", calm), ("broker kills", faulty)):
        rate = r.ended / r.elapsed_s if r.elapsed_s else 0.0
        print(f"  {name:<14} ended {r.ended}/{args.orders} in {r.elapsed_s:5.1f}s = {rate:6.1f}/s,"
              f" duplicates {r.duplicates}")  # fmt: skip
    if calm.elapsed_s and faulty.elapsed_s:
        ratio = (faulty.ended / faulty.elapsed_s) / (calm.ended / calm.elapsed_s)
        print(f"  ratio kills / no faults (orders ended per second): {ratio:.2f}")
    print(f"  no-fault median over {WINDOW_S}s windows: {baseline:.1f} orders/s")
    series = windows(faulty.ended_per_s)
    for fault in faulty.faults:
        start = int(fault.killed_at - faulty.begin)
        after = series[start : start + 30]
        dip = min(after) if after else 0.0
        back = next((i for i, v in enumerate(after) if i > 0 and v >= 0.8 * baseline), None)
        recovered = f"{back}s" if back is not None else "not within 30s"
        role = "controller" if fault.was_controller else "broker"
        print(f"  kill node {fault.node_id} ({role}) at {start:3d}s: dip to {dip:5.1f}/s"
              f" ({dip / baseline:.0%} of baseline), recovered after {recovered}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=2400)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--period", type=float, default=20.0, help="Seconds between kills.")
    parser.add_argument("--down", type=float, default=5.0, help="Seconds a node stays down.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sluice-failover-") as tmp:
        root = Path(tmp)
        cluster = LocalCluster(root / "kafka", 3, free_base_port(6))
        cluster.up()
        try:
            calm = one_round(cluster, root, args, chaos=False)
            faulty = one_round(cluster, root, args, chaos=True)
        finally:
            cluster.down()
    _report(calm, faulty, args)


if __name__ == "__main__":
    main()
