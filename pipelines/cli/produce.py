"""`sluice produce`: synthetic orders, starting stock, or your own JSON-lines events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.text import Text

from pipelines.cli.common import (
    bootstrap_option,
    console,
    err_console,
    fail_line,
    json_option,
    make_settings,
    print_json,
)
from pipelines.progress import progress
from producers.generator import GeneratorConfig
from producers.sender import SendStats
from producers.throttle import Mode


@click.group(invoke_without_command=True)
@click.option("--topic", "-t", default=None, help="Catalog topic to load --from-file into.")
@click.option(
    "--from-file",
    "from_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON lines, one event per line, in the topic's schema.",
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Send the valid lines even if some are invalid (default: all or none).",
)
@bootstrap_option
@json_option
@click.pass_context
def produce(
    ctx: click.Context,
    *,
    topic: str | None,
    from_file: Path | None,
    skip_invalid: bool,
    bootstrap_servers: str | None,
    as_json: bool,
) -> None:
    """Write events into the pipeline with an idempotent producer (acks=all).

    \b
    Examples:
      sluice produce orders --count 10000 --rate 500      synthetic orders, 500/s
      sluice produce inventory                            starting stock for every SKU
      sluice produce -t orders.placed --from-file x.jsonl your own events, all or none
      sluice produce -t orders.placed --from-file x.jsonl --skip-invalid

    --from-file reads JSON lines (one event per line, in the topic's newest schema) and
    checks and encodes every line before sending any: each bad line is listed with its
    number and the fields at fault, and nothing is sent unless all are valid (or
    --skip-invalid sends the valid ones and lists the skipped line numbers). Exit codes:
    0 sent, 1 invalid lines or undelivered records, 2 bad flags or settings.
    """
    if ctx.invoked_subcommand is not None:
        return
    if topic is None or from_file is None:
        raise click.UsageError("give a subcommand (orders, inventory) or --topic with --from-file")
    from producers.jsonl import InvalidInput, produce_file

    settings = make_settings(bootstrap_servers)
    with progress(f"producing to {topic}") as reporter:
        loaded, stats = produce_file(
            settings, topic, from_file, skip_invalid=skip_invalid, reporter=reporter
        )
    for number, reason in loaded.problems:
        err_console.print(
            Text(f"{'skipped ' if skip_invalid else ''}{from_file}:{number}: {reason}")
        )
    if stats is None:
        raise InvalidInput(
            f"{len(loaded.problems)} invalid line(s) in {from_file}; nothing was sent "
            "(fix them, or pass --skip-invalid to send the valid ones)"
        )
    skipped = [number for number, _reason in loaded.problems]
    _finish(stats, as_json, extra={"skipped_invalid": len(skipped), "skipped_lines": skipped})


@produce.command()
@click.option(
    "--count",
    "-n",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Orders to produce.",
)
@click.option(
    "--rate",
    "-r",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Orders per second (token bucket); 0 = as fast as possible.",
)
@click.option(
    "--seed",
    type=int,
    default=1,
    show_default=True,
    help="Same seed, same orders (ids included): rerun to make duplicates.",
)
@click.option(
    "--customers",
    type=click.IntRange(1),
    default=GeneratorConfig.customers,
    show_default=True,
    help="Distinct customers.",
)
@click.option(
    "--skus",
    type=click.IntRange(1),
    default=GeneratorConfig.skus,
    show_default=True,
    help="Distinct SKUs (popularity is skewed: a few sell most).",
)
@click.option(
    "--invalid-fraction",
    type=click.FloatRange(0, 1),
    default=GeneratorConfig.invalid_fraction,
    show_default=True,
    help="Share of business-invalid orders (no lines, bad quantity, unknown SKU, "
    "wrong total, unsupported currency).",
)
@click.option(
    "--backpressure",
    type=click.Choice(["off", "block", "adaptive"]),
    default="off",
    show_default=True,
    envvar="SLUICE_PRODUCE_BACKPRESSURE",
    show_envvar=True,
    help="Slow down on the order stage's lag: block above the high mark until it is below "
    "the low mark, or adapt the rate (AIMD).",
)
@click.option(
    "--start-index",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Position of the first order in the seed's sequence.",
)
@bootstrap_option
@json_option
def orders(
    *,
    count: int,
    rate: float,
    seed: int,
    customers: int,
    skus: int,
    invalid_fraction: float,
    start_index: int,
    backpressure: Mode,
    bootstrap_servers: str | None,
    as_json: bool,
) -> None:
    """Synthetic orders onto orders.placed (Avro), keyed by order id."""
    from producers.orders import OrderRun, produce_orders
    from producers.throttle import throttle_for

    settings = make_settings(bootstrap_servers)
    config = GeneratorConfig(
        seed=seed, customers=customers, skus=skus, invalid_fraction=invalid_fraction
    )
    run = OrderRun(count=count, rate=rate, generator=config, start_index=start_index)
    throttle = throttle_for(settings, backpressure, rate) if backpressure != "off" else None
    with progress("orders", total=count) as reporter:
        stats = produce_orders(settings, run, reporter, throttle)
    _finish(stats, as_json)


def _finish(stats: SendStats, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    """Print the summary; exit 1 if anything failed to deliver.

    Lists in `extra` (skipped line numbers) go to JSON only: a human already saw each
    skipped line on stderr.
    """
    summary = {**stats.summary(), **(extra or {})}
    if as_json:
        print_json(summary)
    else:
        for key, value in summary.items():
            if (key != "errors" or value) and not isinstance(value, list):
                console.print(f"{key:>16}: {value}")
    if stats.failed:
        reason, times = max(stats.errors.items(), key=lambda item: item[1], default=("?", 0))
        fail_line(f"{stats.failed} of {stats.sent} records not delivered: {reason} ({times}x)")
        raise click.exceptions.Exit(1)


@produce.command()
@click.option(
    "--skus",
    type=click.IntRange(1),
    default=GeneratorConfig.skus,
    show_default=True,
    help="Seed stock for SKU-00000 up to this many SKUs.",
)
@click.option(
    "--batch",
    default="initial",
    show_default=True,
    help="Adjustment batch id; re-seeding the same batch is a no-op in the stage.",
)
@bootstrap_option
@json_option
def inventory(skus: int, batch: str, bootstrap_servers: str | None, as_json: bool) -> None:
    """Starting stock per SKU, sent as RESTOCK requests to each SKU's partition of the
    orders app's stock requests topic (before any order's reservation for it)."""
    from producers.inventory import seed_inventory

    settings = make_settings(bootstrap_servers)
    with progress("inventory", total=skus) as reporter:
        stats = seed_inventory(settings, skus, batch, reporter)
    _finish(stats, as_json)
