"""`sluice lag`: consumer-group lag per topic and partition, and the controllers' state."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from pipelines import lag as lag_mod
from pipelines.catalog import APP_IDS
from pipelines.cli.common import bootstrap_option, console, make_settings, print_json
from pipelines.settings import Settings


@click.command()
@click.option(
    "--group",
    "-g",
    "groups",
    multiple=True,
    help="Consumer group (repeatable).  [default: every stage's group]",
)
@click.option("--watch", "-w", is_flag=True, help="Refresh every interval until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(0.2),
    default=None,
    help="Seconds between refreshes with --watch.  [default: backpressure interval]",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Rows {group, topic, partition, committed, end_offset, lag} as JSON.",
)
@bootstrap_option
def lag(
    *,
    groups: tuple[str, ...],
    watch: bool,
    interval: float | None,
    as_json: bool,
    bootstrap_servers: str | None,
) -> None:
    """Lag = log-end offset - committed offset, as `kafka-consumer-groups --describe` shows it.

    Also shows what each stage's backpressure controller decided (paused partitions,
    marks), read from the workers' state files under the data dir.
    """
    settings = make_settings(bootstrap_servers)
    names = list(groups) or [settings.group(app_id) for app_id in APP_IDS.values()]
    while True:
        rows = [row for group in names for row in lag_mod.group_lag(settings, group)]
        if as_json:
            print_json([_row(r) for r in rows])
        else:
            _show(rows, controllers(settings))
        if not watch:
            return
        time.sleep(interval or settings.backpressure.interval_s)


def _row(r: lag_mod.PartitionLag) -> dict[str, Any]:
    return {
        "group": r.group,
        "topic": r.topic,
        "partition": r.partition,
        "committed": r.committed,
        "end_offset": r.end_offset,
        "lag": r.lag,
    }


def _show(rows: list[lag_mod.PartitionLag], states: list[dict[str, Any]]) -> None:
    table = Table("group", "topic", "partition", "committed", "end offset", "lag")
    totals: dict[str, int] = {}
    for r in rows:
        table.add_row(
            r.group,
            r.topic,
            str(r.partition),
            "-" if r.committed is None else str(r.committed),
            str(r.end_offset),
            str(r.lag),
        )
        totals[r.group] = totals.get(r.group, 0) + r.lag
    console.print(table)
    for group, total in totals.items():
        console.print(f"total lag of {group}: {total}")
    for state in states:
        paused = ", ".join(state["paused_partitions"]) or "none"
        console.print(
            f"controller {state['stage']} ({state['worker']}): "
            f"{'PAUSED' if state['paused'] else 'running'}, watching "
            f"{state['watching']} lag {state['lag']} (high {state['high']}, "
            f"low {state['low']}), paused partitions: {paused}"
        )


def controllers(settings: Settings, fresh_s: float = 30.0) -> list[dict[str, Any]]:
    """The latest state each local worker's controller wrote (stale files are skipped)."""
    states = []
    now_ms = time.time() * 1000
    for path in sorted(Path(settings.data_dir, "faust").glob("*/*/backpressure.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if now_ms - state.get("updated_at", 0) <= fresh_s * 1000:
            states.append({**state, "worker": path.parent.name})
    return states
