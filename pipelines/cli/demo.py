"""`sluice demo`: the main job on the embedded default, one command."""

from __future__ import annotations

import json

import click

from pipelines.cli.common import bootstrap_option, console, make_settings, note
from pipelines.demo import DemoOptions, run_demo


@click.command()
@click.option(
    "--orders",
    type=click.IntRange(1, 10_000_000),
    default=3000,
    show_default=True,
    help="How many orders to produce.",
)
@click.option(
    "--rate",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Orders per second; 0 = as fast as the producer goes.",
)
@click.option("--seed", type=int, default=None, help="Order generator seed.  [default: time]")
@click.option(
    "--report",
    "report_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the final report as JSON to this file.",
)
@bootstrap_option
def demo(
    *,
    orders: int,
    rate: float,
    seed: int | None,
    report_file: str | None,
    bootstrap_servers: str | None,
) -> None:
    """Run the main job end to end and print a summary.

    Without --bootstrap-servers it starts the local Apache Kafka first (Java 17+ and
    Maven needed), creates the pipeline topics, seeds stock, produces Avro orders and
    reads them back, checking that every one arrived and decodes.
    """
    settings = make_settings(bootstrap_servers)
    options = DemoOptions(orders=orders, rate=rate, seed=seed, start_local=not bootstrap_servers)
    report = run_demo(settings, options, note)
    for key, value in report.items():
        console.print(f"{key:>26}: {value}")
    if report_file:
        with open(report_file, "w") as handle:
            json.dump(report, handle, indent=2)
    if report["missing"] or report["produce_failed"] or report["undecodable"]:
        raise click.exceptions.Exit(1)
