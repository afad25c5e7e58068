"""`sluice topics create|list`: the catalog's topics on a cluster."""

from __future__ import annotations

import click
from rich.table import Table

from pipelines import admin
from pipelines.catalog import CATALOG
from pipelines.cli.common import bootstrap_option, console, json_option, make_settings, print_json


@click.group()
def topics() -> None:
    """Create and inspect the pipeline's topics (declared once in pipelines/catalog.py).

    \b
    Examples:
      sluice topics create                         every catalog topic, 6 partitions each
      SLUICE_TOPIC_PREFIX=demo-1. sluice topics create   a second pipeline on one cluster
      sluice topics list --json

    The prefix (SLUICE_TOPIC_PREFIX) and the connection (KAFKA_BOOTSTRAP_SERVERS,
    SLUICE_SECURITY__*) come from the environment; `sluice config` lists every setting.
    """


@topics.command()
@bootstrap_option
@click.option(
    "--partitions",
    type=click.IntRange(1, 1000),
    default=None,
    envvar="SLUICE_PARTITIONS",
    show_envvar=True,
    help="Partitions per pipeline topic.  [default: 6]",
)
@json_option
def create(bootstrap_servers: str | None, partitions: int | None, as_json: bool) -> None:
    """Create every missing catalog topic; verify the ones that exist.

    Replication follows the cluster: 1 on one broker, 3 (min.insync.replicas=2) on three
    or more. An existing topic with another partition count is reported and left as is.
    """
    overrides = {"partitions": partitions} if partitions else {}
    settings = make_settings(bootstrap_servers, **overrides)
    result = admin.ensure_topics(settings)
    if as_json:
        print_json({"created": result.created, "existing": result.existing})
        return
    for name in result.created:
        console.print(f"created  {name}")
    for name in result.existing:
        console.print(f"verified {name}")
    console.print(f"{len(result.created)} created, {len(result.existing)} already there")


@topics.command(name="list")
@bootstrap_option
@json_option
def list_(bootstrap_servers: str | None, as_json: bool) -> None:
    """Show the catalog's topics with their partitions and replication on the cluster."""
    settings = make_settings(bootstrap_servers)
    live = admin.list_topics(settings)
    rows = []
    for spec in CATALOG:
        state = live.get(settings.topic(spec.name))
        rows.append(
            {
                "topic": settings.topic(spec.name),
                "partitions": state.partitions if state else None,
                "replication": state.replication if state else None,
                "key": spec.key,
                "cleanup": spec.cleanup_policy,
                "schema": spec.value_schema,
                "exists": state is not None,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table("topic", "partitions", "replicas", "key", "cleanup", "value schema")
    for row in rows:
        missing = "[red]missing[/]"
        table.add_row(
            str(row["topic"]),
            str(row["partitions"]) if row["exists"] else missing,
            str(row["replication"] or "-"),
            str(row["key"]),
            str(row["cleanup"]),
            str(row["schema"] or "(raw, with reason headers)"),
        )
    console.print(table)
    absent = sum(1 for r in rows if not r["exists"])
    if absent:
        console.print(f"{absent} catalog topic(s) missing: run `sluice topics create`")
