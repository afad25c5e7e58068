"""`sluice dlq list|redrive`: inspect every stage's dead letters and send them again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.table import Table
from rich.text import Text

from pipelines.cli.common import (
    bootstrap_option,
    console,
    json_option,
    make_settings,
    note,
    print_json,
)

F = TypeVar("F", bound=Callable[..., Any])

DLQ_CHOICES = {
    "orders": "orders.dlq",
    "notifications": "notifications.dlq",
    "analytics": "analytics.dlq",
}


def _dlq_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--dlq",
        "dlqs",
        type=click.Choice([*DLQ_CHOICES, "all"], case_sensitive=False),
        multiple=True,
        help=help_text + "  [default: all]",
    )


def _chosen(dlqs: tuple[str, ...]) -> tuple[str, ...]:
    picked = {d.lower() for d in dlqs}
    if not picked or "all" in picked:
        return tuple(DLQ_CHOICES.values())
    return tuple(topic for name, topic in DLQ_CHOICES.items() if name in picked)


@click.group()
def dlq() -> None:
    """Dead letters of every stage (orders.dlq, notifications.dlq, analytics.dlq).

    \b
    Examples:
      sluice dlq list                          the 50 newest, every DLQ
      sluice dlq list --dlq orders --json      orders.dlq only, as JSON
      sluice dlq redrive                       everything that can go back, once
      sluice dlq redrive --dlq orders --since 2026-11-28T10:00
      sluice dlq redrive --channel sms         notifications on one channel only

    The topic prefix (SLUICE_TOPIC_PREFIX) and the Kafka connection
    (KAFKA_BOOTSTRAP_SERVERS, SLUICE_SECURITY__*) come from the environment.
    """


@dlq.command(name="list")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="Show the N most recent dead letters.",
)
@_dlq_option("Only this DLQ (repeatable).")
@json_option
@bootstrap_option
def list_(limit: int, dlqs: tuple[str, ...], as_json: bool, bootstrap_servers: str | None) -> None:
    """Show dead letters with their reason, source record and (notifications) attempts.

    Records that could not be decoded are shown as such, with the reason; they cannot
    be redriven. Exit 0 also when there are none.
    """
    from consumers.dlq import recent

    letters, total = recent(make_settings(bootstrap_servers), limit, _chosen(dlqs))
    if as_json:
        print_json([letter.summary() for letter in letters])
        return
    table = Table("dead-lettered", "dlq", "source", "key / channel", "attempts", "reason")
    for letter in letters:
        row = letter.summary()
        reason = Text(row["reason"])
        if not row["redrivable"]:
            reason = Text.assemble(("not redrivable", "red"), f": {row['undecodable']}; ", reason)
        table.add_row(
            _time(row["dead_lettered_at"]),
            row["dlq"],
            str(row["source"] or "-"),
            " ".join(str(v) for v in (row["notification_id"] or row["key"], row["channel"]) if v)
            or "-",
            str(row["attempts"] or "-"),
            reason,
        )
    console.print(table)
    note(f"{len(letters)} shown of {total} dead letters")


@dlq.command()
@_dlq_option("Only this DLQ (repeatable).")
@click.option(
    "--channel",
    type=click.Choice(["EMAIL", "SMS", "PUSH"], case_sensitive=False),
    default=None,
    help="Only this channel's notifications (implies --dlq notifications).",
)
@click.option(
    "--since",
    metavar="ISO",
    default=None,
    help="Only dead letters written at or after this time (ISO-8601, UTC if naive, or epoch ms).",
)
@json_option
@bootstrap_option
def redrive(
    dlqs: tuple[str, ...],
    channel: str | None,
    since: str | None,
    as_json: bool,
    bootstrap_servers: str | None,
) -> None:
    """Send dead letters back where their stage takes them again, each one once.

    \b
    notifications.dlq: the task goes back to its channel topic under the same
      notification id with a fresh attempt budget; the stage retracts the old
      dead-letter result and ends the id again in exactly one result.
    orders.dlq, analytics.dlq: the record (key and value as they were) goes back to
      its source topic, named by the letter's sluice.source.topic header (catalog or
      prefixed name), e.g. a restock dead-lettered while the schema registry was down
      goes back to inventory.reservations.

    \b
    Idempotent: every redriven record carries a sluice.redrive header naming its dead
    letter, and a letter whose header is already on the target topic is skipped and
    counted ("skipped N already redriven"). Should two redrives race, the stages
    absorb the duplicate: the order stage takes an order id once and a stock request
    (a restock by its adjustment id) once, notifications ignore a token they have
    seen. Letters that still do not decode, or name no topic their stage reads, stay
    where they are and are counted. A redriven record that fails again comes back as
    a new dead letter with the reason. Exit 1 if any record was not acknowledged
    (rerun: what arrived is skipped).
    """
    from consumers.dlq import TOPIC, redrive_all
    from consumers.tail import parse_time

    since_ms = None
    if since:
        try:
            since_ms = parse_time(since)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
    chosen = (TOPIC,) if channel else _chosen(dlqs)
    report = redrive_all(
        make_settings(bootstrap_servers), chosen, channel=channel, since_ms=since_ms
    )
    if as_json:
        print_json(report.as_json())
        return
    summary = report.as_json()
    parts = {**summary["by_channel"], **summary["by_source_topic"]}
    detail = ", ".join(f"{where.lower()} {n}" for where, n in sorted(parts.items()))
    console.print(f"re-queued {report.total}" + (f" ({detail})" if detail else ""))
    if report.skipped:
        console.print(f"skipped {report.skipped} already redriven (nothing sent for them)")
    left = {
        "undecodable": summary["skipped_undecodable"],
        "with no known source topic": summary["skipped_unknown_source"],
        "on another channel": summary["skipped_other_channel"],
        "superseded by a later dead letter of the same id": summary["superseded"],
    }
    if any(left.values()):
        note("left alone: " + ", ".join(f"{n} {why}" for why, n in left.items() if n))


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
