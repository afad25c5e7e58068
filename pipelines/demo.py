"""The main job, as `make demo` runs it: the pipeline end to end on the embedded default.

Each run gets its own topic prefix (`demo-<id>.`), so a run never sees records of an
earlier one and stock starts full; the topics are deleted afterwards unless `--keep`.
Steps: start the local Kafka if needed, create topics, seed stock, start two order
workers, produce orders at a steady rate, wait until every order has ended, report.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumers.tail import StartAt, read
from pipelines import admin, domain
from pipelines.localkafka import LocalCluster
from pipelines.progress import progress
from pipelines.runner import Fleet
from pipelines.settings import Settings
from pipelines.stats import Reservoir, rounded
from producers.generator import GeneratorConfig
from producers.inventory import seed_inventory
from producers.orders import OrderRun, produce_orders

Note = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    """What `sluice demo` was asked to do."""

    orders: int = 3000
    rate: float = 300.0
    seed: int | None = None
    start_local: bool = True
    keep: bool = False
    order_workers: int = 2
    timeout_s: float = 600.0


def run_demo(settings: Settings, options: DemoOptions, note: Note) -> dict[str, Any]:
    """Run the demo; returns the report (also when orders are left unfinished)."""
    if options.start_local:
        cluster = LocalCluster(settings.data_dir / "kafka", progress=note)
        settings = settings.model_copy(update={"bootstrap_servers": cluster.up().bootstrap})
    run_id = uuid.uuid4().hex[:6]
    settings = settings.model_copy(
        update={"topic_prefix": f"{settings.topic_prefix}demo-{run_id}."}
    )
    note(
        f"run {run_id}: Kafka at {settings.bootstrap_servers}, "
        f"topics prefixed {settings.topic_prefix}"
    )
    created = admin.ensure_topics(settings).created
    fleet = Fleet(settings, settings.data_dir / "demo" / run_id / "logs")
    try:
        return _pipeline(settings, options, fleet, note)
    finally:
        for line in fleet.stop_all():
            note(line)
        if not options.keep:
            admin.delete_topics(settings, created)


def _pipeline(settings: Settings, options: DemoOptions, fleet: Fleet, note: Note) -> dict[str, Any]:
    seed_inventory(settings, domain.DEFAULT_SKUS)
    for _ in range(options.order_workers):
        fleet.start("orders")
    for worker in fleet.workers:
        worker.wait_ready()
    note(f"{len(fleet.workers)} order workers ready; logs in {fleet.logs}")
    seed = options.seed if options.seed is not None else int(time.time())
    run = OrderRun(count=options.orders, rate=options.rate, generator=GeneratorConfig(seed=seed))
    started = time.monotonic()
    with progress("orders produced", total=options.orders) as reporter:
        stats = produce_orders(settings, run, reporter)
    ended = _wait_for_outcomes(settings, options, note)
    elapsed = time.monotonic() - started
    return {
        "orders": options.orders,
        "seed": seed,
        "produced": stats.acked,
        "produce_failed": stats.failed,
        **_outcome_figures(ended),
        "unfinished": stats.acked - len(ended),
        "elapsed_s": round(elapsed, 1),
        "orders_per_s": round(len(ended) / elapsed, 1) if elapsed else None,
        **_stock_figures(ended),
    }


def _wait_for_outcomes(
    settings: Settings, options: DemoOptions, note: Note
) -> dict[str, dict[str, Any]]:
    """Follow orders.confirmed and orders.rejected until every order has ended."""
    ended: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + options.timeout_s
    with progress("orders ended", total=options.orders) as reporter:
        while len(ended) < options.orders and time.monotonic() < deadline:
            before = len(ended)
            for topic in ("orders.confirmed", "orders.rejected"):
                for row in read(settings, topic, StartAt("beginning")):
                    if "value" in row:
                        ended.setdefault(row["value"]["order_id"], {"topic": topic, **row["value"]})
            reporter.advance(len(ended) - before)
            if len(ended) < options.orders:
                time.sleep(1.0)
    if len(ended) < options.orders:
        note(f"{options.orders - len(ended)} orders had not ended after {options.timeout_s:.0f}s")
    return ended


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


def _stock_figures(ended: dict[str, dict[str, Any]]) -> dict[str, Any]:
    sold: Counter[str] = Counter()
    for event in ended.values():
        for line in event.get("lines", []) if event["topic"] == "orders.confirmed" else []:
            sold[line["sku"]] += line["quantity"]
    initial = {
        domain.sku_code(i): domain.initial_stock(domain.sku_code(i))
        for i in range(domain.DEFAULT_SKUS)
    }
    return {
        "stock_initial_units": sum(initial.values()),
        "stock_sold_units": sum(sold.values()),
        "skus_sold_out": sum(1 for sku, units in sold.items() if units >= initial.get(sku, 0)),
        "top_skus": [f"{sku}: {units}" for sku, units in sold.most_common(3)],
    }
