"""`sluice consume TOPIC`: decoded records as lines, from the end, the beginning or a time."""

from __future__ import annotations

import json
import sys

import click

from pipelines.cli.common import bootstrap_option, make_settings


@click.command()
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest retained record.")
@click.option(
    "--from-time",
    metavar="ISO",
    default=None,
    help="Start at the first record at or after this time (ISO-8601, UTC if naive).",
)
@click.option("--limit", "-n", type=click.IntRange(1), default=None, help="Stop after N records.")
@click.option(
    "--follow/--no-follow",
    default=None,
    help="Keep waiting for new records.  [default: follow only when starting at the end]",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@bootstrap_option
def consume(
    *,
    topic: str,
    from_beginning: bool,
    from_time: str | None,
    limit: int | None,
    follow: bool | None,
    as_json: bool,
    bootstrap_servers: str | None,
) -> None:
    """Print TOPIC's records decoded by schema, with key, partition, offset and timestamp.

    \b
    Examples:
      sluice consume orders.placed                         new records, until Ctrl-C
      sluice consume orders.status --from-beginning -n 20 --json
      sluice consume orders.dlq --from-time 2026-11-28T10:00

    TOPIC is a catalog name (SLUICE_TOPIC_PREFIX is added) or a physical one. Never
    commits offsets and never joins a stage's group. Undecodable records are printed
    with the reason instead of being skipped.
    """
    from consumers.tail import StartAt, parse_time, read

    if from_beginning and from_time:
        raise click.UsageError("--from-beginning and --from-time exclude each other")
    if from_time:
        try:
            start = StartAt("time", parse_time(from_time))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--from-time") from None
    else:
        start = StartAt("beginning" if from_beginning else "end")
    if follow is None:
        follow = start.kind == "end"
    settings = make_settings(bootstrap_servers)
    for row in read(settings, topic, start, limit=limit, follow=follow):
        sys.stdout.write(_line(row, as_json) + "\n")
        sys.stdout.flush()


def _line(row: dict[str, object], as_json: bool) -> str:
    if as_json:
        return json.dumps(row, default=str, separators=(",", ":"))
    where = f"{row['topic']}[{row['partition']}]@{row['offset']}"
    body = row["error"] if "error" in row else json.dumps(row.get("value"), default=str)
    return f"{where} ts={row['timestamp']} key={row['key']} {body}"
