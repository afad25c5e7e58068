"""Backpressure under overload: the same run with the controller off and on, side by side.

Orders arrive at a steady rate that produces far more notifications than the slow local
providers can send. One order worker and one notification worker run per round; every
half second the benchmark samples the notification group's lag, the orders group's lag,
the workers' resident memory (process tree, from /proc) and the controller's state.

  off: the orders stage keeps taking orders; notification lag grows with the input
  on:  the orders stage pauses orders.placed above the high mark and resumes below the
       low mark; the backlog stays in Kafka (durable, cheap) instead of downstream

Printed: max and final notification lag, max worker RSS, orders decided per second,
pause transitions and time paused, and the on/off ratios. `--plot FILE` draws both lag
curves: a PNG through matplotlib (the `dev` extra), or an SVG without any plotting
library (the README links the SVG: it is text, and the repository holds no binaries).

    python -m bench.backpressure [--orders 1200] [--rate 60] [--high 300] [--plot lag.png]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import broker, machine
from bench.svg import line_chart
from pipelines import admin, lag
from pipelines.providers import (
    HttpProviderConfig,
    ProvidersConfig,
    SmtpProviderConfig,
    providers_in_thread,
)
from pipelines.runner import Fleet, StageProcess
from pipelines.settings import BackpressureSettings, NotificationSettings, Settings
from producers.generator import GeneratorConfig
from producers.inventory import seed_inventory
from producers.orders import OrderRun, produce_orders

CHANNELS = ("email", "sms", "push")


@dataclass
class Round:
    """What one round measured."""

    mode: str
    times: list[float] = field(default_factory=list)
    notification_lag: list[int] = field(default_factory=list)
    orders_lag: list[int] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    decided_per_s: float = 0.0
    transitions: float = 0.0
    paused_s: float = 0.0


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB (Linux /proc)."""
    total_kib, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return total_kib / 1024


def _sample(settings: Settings, workers: list[StageProcess], out: Round, begin: float) -> None:
    notes = settings.group("sluice-notifications")
    orders = settings.group("sluice-orders")
    out.times.append(time.monotonic() - begin)
    channels = [settings.topic(f"notifications.{c}") for c in CHANNELS]
    out.notification_lag.append(lag.total(lag.group_lag(settings, notes, channels)))
    out.orders_lag.append(
        lag.total(lag.group_lag(settings, orders, [settings.topic("orders.placed")]))
    )
    out.rss_mib.append(sum(rss_mib(w.proc.pid) for w in workers))


def _decided(orders: StageProcess) -> float:
    """Orders the stage decided (confirmed or rejected), from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{orders.port}/metrics", timeout=5) as body:
        lines = body.read().decode().splitlines()
    outcomes = ('topic="orders.confirmed"', 'topic="orders.rejected"')
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("sluice_events_out_total{") and any(o in line for o in outcomes)
    )


def one_round(bootstrap: str, tmp: Path, mode: str, args: argparse.Namespace) -> Round:
    """Run the overload once with backpressure `mode` ('off' or 'on')."""
    run = uuid.uuid4().hex[:6]
    marks = BackpressureSettings(
        enabled=mode == "on", high=args.high, low=args.high // 4, interval_s=0.5
    )
    provider = ProvidersConfig(
        smtp_port=0,
        http_port=0,
        smtp=SmtpProviderConfig(latency_ms=args.latency_ms),
        http=HttpProviderConfig(latency_ms=args.latency_ms),
    )
    out = Round(mode)
    with providers_in_thread(provider) as handle:
        settings = Settings(
            bootstrap_servers=bootstrap,
            topic_prefix=f"bb{run}.",
            data_dir=tmp / run,
            backpressure=marks,
            notifications=NotificationSettings(concurrency=2),
            delivery=handle.delivery_settings(http_timeout_s=5.0),
        )
        admin.ensure_topics(settings)
        seed_inventory(settings, 200, scale=50)
        fleet = Fleet(settings, tmp / run / "logs")
        try:
            orders, notes = fleet.start("orders"), fleet.start("notifications")
            orders.wait_ready()
            notes.wait_ready()
            feeder = threading.Thread(
                target=produce_orders,
                args=(
                    settings,
                    OrderRun(count=args.orders, rate=args.rate, generator=GeneratorConfig(seed=7)),
                ),
            )
            begin = time.monotonic()
            feeder.start()
            while feeder.is_alive() or time.monotonic() - begin < args.orders / args.rate + 5:
                _sample(settings, [orders, notes], out, begin)
                time.sleep(0.5)
            feeder.join()
            elapsed = time.monotonic() - begin
            out.decided_per_s = _decided(orders) / elapsed
            if mode == "on":
                out.transitions = orders.metric("sluice_backpressure_transitions_total")
                out.paused_s = orders.metric("sluice_backpressure_paused_seconds_total")
        finally:
            for note in fleet.stop_all():
                print("  note:", note)
            with contextlib.suppress(Exception):
                names = [
                    t for t in admin.list_topics(settings) if t.startswith(settings.topic_prefix)
                ]
                admin.delete_topics(settings, names)
    return out


def _print(rounds: dict[str, Round], args: argparse.Namespace) -> None:
    off, on = rounds["off"], rounds["on"]
    print(
        f"\nBackpressure: {args.orders} orders at {args.rate}/s, providers answering in "
        f"{args.latency_ms} ms, marks {args.high}/{args.high // 4}  ({machine()})"
    )
    print(f"  {'':<30}{'off':>12}{'on':>12}{'on/off':>10}")
    rows = [
        ("max notification lag", max(off.notification_lag), max(on.notification_lag)),
        ("final notification lag", off.notification_lag[-1], on.notification_lag[-1]),
        ("max orders.placed lag", max(off.orders_lag), max(on.orders_lag)),
        ("max worker RSS (MiB)", max(off.rss_mib), max(on.rss_mib)),
        ("orders decided per s", off.decided_per_s, on.decided_per_s),
    ]
    for name, a, b in rows:
        ratio = f"{b / a:.2f}" if a else "-"
        print(f"  {name:<30}{a:>12,.0f}{b:>12,.0f}{ratio:>10}")
    print(f"  pause/resume transitions (on): {on.transitions:.0f}, time paused {on.paused_s:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1200, help="Orders per round.")
    parser.add_argument("--rate", type=float, default=60.0, help="Orders per second.")
    parser.add_argument("--high", type=int, default=300, help="High mark (low = high / 4).")
    parser.add_argument("--latency-ms", type=int, default=200, help="Provider answer time.")
    parser.add_argument("--plot", type=Path, help="Write both lag curves (.png or .svg).")
    args = parser.parse_args()
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        rounds = {mode: one_round(bootstrap, Path(tmp), mode, args) for mode in ("off", "on")}
    _print(rounds, args)
    if args.plot:
        series = {f"backpressure {r.mode}": (r.times, r.notification_lag) for r in rounds.values()}
        title = "Notification group lag (records) over time (s)"
        if args.plot.suffix == ".svg":
            args.plot.write_text(line_chart(title, series, args.high))
        else:
            _png(args.plot, title, series, args.high)
        print(f"  lag curves: {args.plot}")


def _png(
    path: Path, title: str, series: dict[str, tuple[list[float], list[int]]], high: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 3.6))
    for name, (times, lags) in series.items():
        axes.plot(times, lags, label=name)
    axes.axhline(high, linestyle="--", color="grey", label="high mark")
    axes.set(title=title, xlabel="seconds", ylabel="lag (records)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
