"""`sluice demo`: the main job on the embedded default, one command."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipelines.cli.common import bootstrap_option, check_writable, console, make_settings, note
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
    default=100.0,
    show_default=True,
    help="Orders per second; 0 = as fast as the producer goes (still throttled by lag).",
)
@click.option("--seed", type=int, default=None, help="Order generator seed.  [default: time]")
@click.option(
    "--failure-rate",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="Share of sends the local providers fail, to show retries (when the demo starts them).",
)
@click.option(
    "--report",
    "report_file",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also write the final report as JSON to this file.",
)
@click.option(
    "--keep",
    is_flag=True,
    help="Leave workers, providers and topics running, and print the dashboard URL.",
)
@click.option("--no-live", is_flag=True, help="Plain progress lines instead of the live view.")
@bootstrap_option
def demo(
    *,
    orders: int,
    rate: float,
    seed: int | None,
    failure_rate: float,
    report_file: str | None,
    keep: bool,
    no_live: bool,
    bootstrap_servers: str | None,
) -> None:
    """Run the whole pipeline end to end and print a report.

    Without --bootstrap-servers it starts the local Apache Kafka first (Java 17+ and
    Maven needed), and local SMTP/HTTP providers unless some answer on the configured
    ports. Then, under a fresh topic prefix: stock, two order workers, two notification
    workers, one analytics worker (separate processes), orders at --rate with
    backpressure on, a live view until every order ended and every notification has
    its result, a replay of the run compared with the live analytics, and a report.
    Exit 0 only when everything finished and replay equals live.

    \b
    Examples:
      sluice demo                               # about a minute on 2 cores
      sluice demo --orders 500 --report out.json
      sluice demo --keep                        # then open the dashboard URL it prints
    """
    if report_file:
        check_writable(Path(report_file), "--report")
    settings = make_settings(bootstrap_servers)
    options = DemoOptions(
        orders=orders,
        rate=rate,
        seed=seed,
        failure_rate=failure_rate,
        keep=keep,
        live=not no_live,
        start_local=not bootstrap_servers,
    )
    report = run_demo(settings, options, note)
    for key, value in report.items():
        console.print(f"{key:>28}: {value}", highlight=False, soft_wrap=True)
    if report_file:
        with open(report_file, "w") as handle:
            json.dump(report, handle, indent=2)
        note(f"report written to {report_file}")
    if not succeeded(report):
        raise click.exceptions.Exit(1)


def succeeded(report: dict[str, object]) -> bool:
    """Every order ended once, every notification has a result, replay equals live."""
    return (
        report["produce_error"] is None
        and report["unfinished_orders"] == 0
        and report["notifications_missing"] == 0
        and report["duplicates"] == 0
        and report["replay_equal"] is True
    )
