"""The main job, as `make demo` runs it: the whole pipeline end to end on the embedded default.

Each run gets its own topic prefix (`demo-<id>.`), so a run never sees records of an
earlier one and stock starts full. Steps: start the local Kafka and the local providers
if they are not running, create topics, seed stock, start the workers (two order, two
notification, one analytics, each its own process), produce orders at a steady rate
with backpressure on, follow the outputs live until every order ended and every
notification has its result, replay the run's time range and compare it with the live
analytics, and report. Without `--keep` everything the demo started is stopped and its
topics are deleted; Ctrl-C stops the same way.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines import admin, domain, rules
from pipelines.demo_parts import DemoProviders, compare_replay, settle_windows
from pipelines.demo_watch import Follower, Snapshot, group_lags, line, view
from pipelines.localkafka import LocalCluster
from pipelines.runner import Fleet, StageProcess
from pipelines.settings import NotificationSettings, Settings
from pipelines.stages.windows import WindowConfig
from pipelines.stats import Reservoir, rounded
from producers.generator import GeneratorConfig
from producers.inventory import seed_inventory
from producers.orders import OrderRun, produce_orders
from producers.throttle import throttle_for

Note = Callable[[str], None]
# Windows small enough to close within the run, so replay can be compared with them.
DEMO_WINDOWS = WindowConfig(tumbling_s=10, hopping_s=30, hop_s=10, lateness_s=3, top_n=5)
# A short backoff ladder: the demo's injected failures retry within seconds.
DEMO_NOTIFICATIONS = NotificationSettings(retry_delays_s=(1.0, 2.0, 4.0))


@dataclass(frozen=True)
class DemoOptions:
    """What `sluice demo` was asked to do."""

    orders: int = 3000
    rate: float = 100.0
    seed: int | None = None
    start_local: bool = True
    keep: bool = False
    failure_rate: float = 0.05
    order_workers: int = 2
    notification_workers: int = 2
    analytics_workers: int = 1
    timeout_s: float = 600.0
    live: bool = True


@dataclass
class Run:
    """One demo run's moving parts."""

    settings: Settings
    options: DemoOptions
    fleet: Fleet
    follower: Follower
    note: Note
    produced: int = 0
    throttled_s: float = 0.0
    produce_error: str | None = None


def run_demo(settings: Settings, options: DemoOptions, note: Note) -> dict[str, Any]:
    """Run the demo; returns the report (also when something was left unfinished)."""
    if options.start_local:
        cluster = LocalCluster(settings.data_dir / "kafka", progress=note)
        settings = settings.model_copy(update={"bootstrap_servers": cluster.up().bootstrap})
    run_id = uuid.uuid4().hex[:6]
    providers = DemoProviders(settings, options.failure_rate, note)
    settings = settings.model_copy(
        update={
            "topic_prefix": f"{settings.topic_prefix}demo-{run_id}.",
            "analytics": DEMO_WINDOWS,
            "notifications": DEMO_NOTIFICATIONS,
            "delivery": providers.delivery,
        }
    )
    note(f"run {run_id}: Kafka at {settings.bootstrap_servers}, topics {settings.topic_prefix}*")
    created = admin.ensure_topics(settings).created
    fleet = Fleet(settings, settings.data_dir / "demo" / run_id / "logs")
    follower = Follower(settings)
    run = Run(settings, options, fleet, follower, note)
    finished = False
    try:
        providers.start()
        report = _pipeline(run)
        finished = True
        return report
    finally:
        follower.stop()
        if options.keep and finished:
            _kept(run, providers)
        else:
            for line_ in fleet.stop_all():
                note(line_)
            providers.stop()
            admin.delete_topics(settings, created)


def _pipeline(run: Run) -> dict[str, Any]:
    settings, options = run.settings, run.options
    seed_inventory(settings, domain.DEFAULT_SKUS)
    _start_workers(run)
    seed = options.seed if options.seed is not None else int(time.time())
    started_ms = int(time.time() * 1000)
    started = time.monotonic()
    run.follower.start()
    feeder = threading.Thread(target=_produce, args=(run, seed), name="demo-producer", daemon=True)
    feeder.start()
    _watch(run, feeder, started)
    elapsed = time.monotonic() - started
    ended, results = dict(run.follower.tally.ended), dict(run.follower.tally.results)
    run.note("every order ended; waiting for the last analytics windows to close")
    live = settle_windows(settings, DEMO_WINDOWS)
    replay_equal, replay_detail = compare_replay(settings, live, started_ms - 60_000, run.note)
    return {
        "orders": options.orders,
        "seed": seed,
        "produced": run.produced,
        "produce_error": run.produce_error,
        "producer_throttled_s": round(run.throttled_s, 1),
        **_outcome_figures(ended),
        "unfinished_orders": run.produced - len(ended),
        **_notification_figures(ended, results),
        "duplicates": run.follower.tally.duplicates,
        "elapsed_s": round(elapsed, 1),
        "orders_per_s": round(len(ended) / elapsed, 1) if elapsed else None,
        **_backpressure_figures(run.fleet),
        "analytics_windows": len(live),
        "replay_equal": replay_equal,
        "replay_detail": replay_detail,
        **_stock_figures(ended),
    }


def _start_workers(run: Run) -> None:
    counts = {
        "orders": run.options.order_workers,
        "notifications": run.options.notification_workers,
        "analytics": run.options.analytics_workers,
    }
    for stage, count in counts.items():
        for _ in range(count):
            run.fleet.start(stage)
    for worker in run.fleet.workers:
        worker.wait_ready(timeout=180)
    if not run.fleet.wait_settled():  # orders sent into a rebalance would wait it out
        run.note("the groups had not settled after 90 s; producing anyway")
    run.note(
        f"workers ready: {', '.join(f'{n} {s}' for s, n in counts.items())}; "
        f"logs in {run.fleet.logs}"
    )


def _produce(run: Run, seed: int) -> None:
    """The producer thread: orders at the rate, blocking while the order stage lags."""
    options = run.options
    throttle = throttle_for(run.settings, "block", options.rate)
    order_run = OrderRun(
        count=options.orders, rate=options.rate, generator=GeneratorConfig(seed=seed)
    )

    class Counted:
        def advance(self, n: int = 1) -> None:
            run.produced += n
            run.throttled_s = throttle.throttled_s

        def status(self, _text: str) -> None:
            return None

    try:
        stats = produce_orders(run.settings, order_run, Counted(), throttle)  # type: ignore[arg-type]
        run.produced = stats.acked
        if stats.failed:
            run.produce_error = f"{stats.failed} orders were not acknowledged by the broker"
    except Exception as exc:  # reported, and the demo ends unfinished rather than hanging
        run.produce_error = str(exc)
    run.throttled_s = throttle.throttled_s


def _watch(run: Run, feeder: threading.Thread, started: float) -> None:
    """Refresh the live view until every order ended and every notification has a result."""
    deadline = started + run.options.timeout_s
    show = _live_view(run.options.live)
    try:
        while time.monotonic() < deadline:
            snap = _snapshot(run, started)
            show(snap)
            if run.follower.error:
                raise RuntimeError(f"following the outputs failed: {run.follower.error}")
            done_producing = not feeder.is_alive()
            if (
                done_producing
                and snap.ended >= snap.produced
                and snap.results >= snap.expected_notifications
            ):
                return
            time.sleep(1.0)
        run.note(f"not finished after {run.options.timeout_s:.0f}s; reporting what ended")
    finally:
        show(None)


def _snapshot(run: Run, started: float) -> Snapshot:
    with run.follower.lock:
        ended = list(run.follower.tally.ended.values())
        results = len(run.follower.tally.results)
    expected = sum(len(rules.channels_for(e["customer_id"])) for e in ended)
    orders = [w for w in run.fleet.workers if w.stage == "orders"]
    return Snapshot(
        elapsed_s=time.monotonic() - started,
        produced=run.produced,
        orders=run.options.orders,
        ended=len(ended),
        expected_notifications=expected,
        results=results,
        lags=group_lags(run.settings),
        paused_partitions=int(sum(_metric(w, "sluice_paused_partitions") for w in orders)),
        throttled_s=run.throttled_s,
    )


def _live_view(live: bool) -> Callable[[Snapshot | None], None]:
    """A rich Live table on a terminal; a plain line every 5 s otherwise."""
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=True)
    if live and console.is_terminal:
        display = Live(console=console, refresh_per_second=2, transient=False)
        display.start()

        def show(snap: Snapshot | None) -> None:
            if snap is None:
                display.stop()
            else:
                display.update(view(snap))

        return show
    last = [0.0]

    def show_lines(snap: Snapshot | None) -> None:
        if snap is not None and time.monotonic() - last[0] >= 5:
            last[0] = time.monotonic()
            console.print(line(snap), highlight=False, soft_wrap=True)

    return show_lines


def _metric(worker: StageProcess, name: str) -> float:
    try:
        return worker.metric(name)
    except OSError:
        return 0.0


def _kept(run: Run, providers: DemoProviders) -> None:
    analytics = [w for w in run.fleet.workers if w.stage == "analytics"]
    run.note("--keep: workers, providers and topics stay up (stop the workers with Ctrl-C)")
    for worker in run.fleet.workers:
        run.note(f"  {worker.name}: pid {worker.proc.pid}, http://127.0.0.1:{worker.port}/health")
    if analytics:
        run.note(f"dashboard: http://127.0.0.1:{analytics[0].port}/dashboard")
    providers.detach()


def _outcome_figures(ended: dict[str, dict[str, Any]]) -> dict[str, Any]:
    outcomes = Counter(e.get("reason", "CONFIRMED") for e in ended.values())
    latency = Reservoir()
    for event in ended.values():
        done = event.get("confirmed_at") or event.get("rejected_at")
        latency.add(done - event["placed_at"])
    return {
        "confirmed": outcomes.pop("CONFIRMED", 0),
        "rejected": dict(sorted(outcomes.items())),
        "placed_to_end_p50_ms": rounded(latency.quantile(0.5)),
        "placed_to_end_p99_ms": rounded(latency.quantile(0.99)),
    }


def _notification_figures(
    ended: dict[str, dict[str, Any]], results: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    expected = sum(len(rules.channels_for(e["customer_id"])) for e in ended.values())
    status = Counter(r["status"] for r in results.values())
    return {
        "notifications_expected": expected,
        "notifications_delivered": status.get("DELIVERED", 0),
        "notifications_dead_lettered": status.get("DEAD_LETTERED", 0),
        "notification_retries": sum(r["attempts"] - 1 for r in results.values()),
        "notifications_missing": expected - len(results),
    }


def _backpressure_figures(fleet: Fleet) -> dict[str, Any]:
    orders = [w for w in fleet.workers if w.stage == "orders"]
    return {
        "backpressure_transitions": int(
            sum(_metric(w, "sluice_backpressure_transitions_total") for w in orders)
        ),
        "backpressure_paused_s": round(
            sum(_metric(w, "sluice_backpressure_paused_seconds_total") for w in orders), 1
        ),
    }


def _stock_figures(ended: dict[str, dict[str, Any]]) -> dict[str, Any]:
    sold: Counter[str] = Counter()
    for event in ended.values():
        for line_ in event.get("lines", []) if event["topic"] == "orders.confirmed" else []:
            sold[line_["sku"]] += line_["quantity"]
    initial = {
        domain.sku_code(i): domain.initial_stock(domain.sku_code(i))
        for i in range(domain.DEFAULT_SKUS)
    }
    return {
        "stock_initial_units": sum(initial.values()),
        "stock_sold_units": sum(sold.values()),
        "stock_oversold_skus": sum(1 for sku, units in sold.items() if units > initial.get(sku, 0)),
        "top_skus": [f"{sku}: {units}" for sku, units in sold.most_common(3)],
    }
