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
    default=300.0,
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
@click.option("--keep", is_flag=True, help="Keep this run's topics (workers always stop).")
@bootstrap_option
def demo(
    *,
    orders: int,
    rate: float,
    seed: int | None,
    report_file: str | None,
    keep: bool,
    bootstrap_servers: str | None,
) -> None:
    """Run the pipeline end to end and print a report.

    Without --bootstrap-servers it starts the local Apache Kafka first (Java 17+ and
    Maven needed). Then: topics under a fresh prefix, starting stock, two order
    workers, orders at --rate, and a wait until every order is confirmed or rejected.
    """
    settings = make_settings(bootstrap_servers)
    options = DemoOptions(
        orders=orders, rate=rate, seed=seed, keep=keep, start_local=not bootstrap_servers
    )
    report = run_demo(settings, options, note)
    for key, value in report.items():
        console.print(f"{key:>22}: {value}")
    if report_file:
        with open(report_file, "w") as handle:
            json.dump(report, handle, indent=2)
    if report["unfinished"] or report["produce_failed"]:
        raise click.exceptions.Exit(1)
