"""`sluice dlq list|redrive`: inspect dead-lettered notifications and send them again."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from rich.table import Table

from pipelines.cli.common import (
    bootstrap_option,
    console,
    json_option,
    make_settings,
    note,
    print_json,
)


@click.group()
def dlq() -> None:
    """Dead-lettered notifications (notifications.dlq): list them, redrive them."""


@dlq.command(name="list")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="Show the N most recent dead letters.",
)
@json_option
@bootstrap_option
def list_(limit: int, as_json: bool, bootstrap_servers: str | None) -> None:
    """Show dead-lettered tasks with reason, attempts, channel and times.

    Records that could not be decoded are shown as such, with the reason; they cannot
    be redriven.
    """
    from consumers.dlq import recent

    letters, total = recent(make_settings(bootstrap_servers), limit)
    if as_json:
        print_json([letter.summary() for letter in letters])
        return
    table = Table("dead-lettered", "channel", "notification", "attempts", "first try", "reason")
    for letter in letters:
        row = letter.summary()
        reason = row["reason"] if row["redrivable"] else f"[red]undecodable[/]: {row['reason']}"
        table.add_row(
            _time(row["dead_lettered_at"]),
            str(row["channel"] or "-"),
            str(row["notification_id"] or "-"),
            str(row["attempts"] or "-"),
            _time(row["first_attempt_at"]),
            reason,
        )
    console.print(table)
    note(f"{len(letters)} shown of {total} dead letters")


@dlq.command()
@click.option(
    "--channel",
    type=click.Choice(["EMAIL", "SMS", "PUSH"], case_sensitive=False),
    default=None,
    help="Only this channel's dead letters.  [default: all]",
)
@click.option(
    "--since",
    metavar="ISO",
    default=None,
    help="Only dead letters written at or after this time (ISO-8601, UTC if naive).",
)
@json_option
@bootstrap_option
def redrive(
    channel: str | None, since: str | None, as_json: bool, bootstrap_servers: str | None
) -> None:
    """Re-queue dead-lettered tasks to their channel topic with a fresh attempt budget.

    Each keeps its notification id; the stage retracts the old dead-letter result and
    ends the id again in exactly one result. Redriving the same dead letter twice sends
    nothing twice.
    """
    from consumers.dlq import redrive as run_redrive
    from consumers.tail import parse_time

    since_ms = None
    if since:
        try:
            since_ms = parse_time(since)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
    report = run_redrive(make_settings(bootstrap_servers), channel=channel, since_ms=since_ms)
    if as_json:
        print_json(report.as_json())
        return
    per_channel = ", ".join(f"{ch.lower()} {n}" for ch, n in sorted(report.requeued.items()))
    console.print(f"re-queued {report.total}" + (f" ({per_channel})" if per_channel else ""))
    skipped = report.undecodable + report.filtered + report.superseded
    if skipped:
        note(
            f"left alone: {report.undecodable} undecodable, {report.filtered} other channel, "
            f"{report.superseded} superseded by a later dead letter of the same id"
        )


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
