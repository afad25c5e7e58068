"""The main job, as `make demo` runs it: start what is missing, produce, read back, report.

Later stages grow this into the whole pipeline; today it proves the ground: a real
broker, the catalog's topics, Avro orders through the idempotent producer, and a
read-back that decodes every one of them by schema.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumers.tail import StartAt, read
from pipelines import admin
from pipelines.localkafka import LocalCluster
from pipelines.progress import progress
from pipelines.settings import Settings
from producers.generator import GeneratorConfig
from producers.inventory import seed_inventory
from producers.orders import OrderRun, produce_orders

TOPIC = "orders.placed"


@dataclass(frozen=True)
class DemoOptions:
    """What `sluice demo` was asked to do."""

    orders: int = 3000
    rate: float = 0.0
    seed: int | None = None
    start_local: bool = True


def run_demo(
    settings: Settings, options: DemoOptions, note: Callable[[str], None]
) -> dict[str, Any]:
    """Run the demo against `settings`' cluster (started locally first when asked)."""
    if options.start_local:
        cluster = LocalCluster(settings.data_dir / "kafka", progress=note)
        result = cluster.up()
        settings = settings.model_copy(update={"bootstrap_servers": result.bootstrap})
        note(f"Kafka at {result.bootstrap}")
    admin.ensure_topics(settings)
    seed_inventory(settings, GeneratorConfig.skus)
    seed = options.seed if options.seed is not None else int(time.time())
    started_ms = int(time.time() * 1000)
    run = OrderRun(count=options.orders, rate=options.rate, generator=GeneratorConfig(seed=seed))
    with progress("orders", total=options.orders) as reporter:
        stats = produce_orders(settings, run, reporter)
    read_back = _read_back(settings, seed, started_ms)
    return {
        **{f"produce_{k}": v for k, v in stats.summary().items() if k != "errors"},
        "seed": seed,
        "read_back": read_back["count"],
        "undecodable": read_back["undecodable"],
        "missing": stats.acked - read_back["count"],
    }


def _read_back(settings: Settings, seed: int, since_ms: int) -> dict[str, int]:
    """Count this run's orders on the topic, decoding each by schema."""
    prefix = f"O-{seed}-"
    count = undecodable = 0
    for row in read(settings, TOPIC, StartAt("time", since_ms)):
        if "error" in row:
            undecodable += 1
        elif str(row["value"]["order_id"]).startswith(prefix):
            count += 1
    return {"count": count, "undecodable": undecodable}
