"""`sluice lag`: consumer-group lag per topic and partition, and the controllers' state."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from pipelines import admin
from pipelines import lag as lag_mod
from pipelines.catalog import APP_IDS
from pipelines.cli.common import bootstrap_option, console, make_settings, note, print_json
from pipelines.errors import SluiceError
from pipelines.settings import Settings


class UnknownGroup(SluiceError):
    """A consumer group asked for by name that Kafka does not know."""


def _group_names(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    """Refuse names librdkafka cannot take: it aborts the process on an empty group id
    (a NUL character makes one, as C strings end there)."""
    for name in value:
        if not name.strip():
            raise click.BadParameter("a group name cannot be empty")
        if any(ord(ch) < 32 for ch in name):
            raise click.BadParameter(f"{name!r} holds a control character")
    return value


@click.command()
@click.option(
    "--group",
    "-g",
    "groups",
    multiple=True,
    callback=_group_names,
    help="Consumer group (repeatable); the topic prefix is added when the group exists "
    "under it, as `sluice consume` does for topics.  [default: every stage's group]",
)
@click.option("--watch", "-w", is_flag=True, help="Refresh every interval until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(0.2),
    default=None,
    help="Seconds between refreshes with --watch.  [default: SLUICE_BACKPRESSURE__INTERVAL_S]",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Rows {group, topic, partition, committed, end_offset, lag, log_start, consumer_id, "
    "host, client_id} as JSON; committed and lag are null where nothing was committed.",
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

    \b
    Examples:
      sluice lag                              every stage's group (SLUICE_TOPIC_PREFIX applies)
      sluice lag -g sluice-orders --json      one group, rows as JSON
      sluice lag -g demo-1.sluice-orders      the physical name works too
      sluice lag --watch --interval 2         refresh until Ctrl-C

    \b
    Rows are the partitions the group committed on plus those assigned to a live member,
    with the member that holds each. A partition assigned but never committed shows
    committed "-" and lag "-" (JSON: null), like Kafka's tool: where its member starts
    depends on that member's auto.offset.reset, which only the client knows. The total
    line says how many such partitions there are and how many records they retain (what
    a Sluice stage, which reads from the earliest offset, still has to take).

    A group named with --group that does not exist is an error (exit 1); without
    --group, stage groups not created yet are noted and skipped (exit 1 only if none
    exists). Also shows what each local worker's backpressure controller decided.
    """
    settings = make_settings(bootstrap_servers)
    admin.list_topics(settings)  # one clear line, fast, when the cluster does not answer
    explicit = bool(groups)
    names = list(groups) or [settings.group(app_id) for app_id in APP_IDS.values()]
    while True:
        reports = _reports(settings, names, explicit)
        rows = [row for report in reports for row in report.rows]
        if as_json:
            print_json([_row(r) for r in rows])
        else:
            _show(reports, controllers(settings))
        if not watch:
            return
        time.sleep(interval or settings.backpressure.interval_s)


def _reports(settings: Settings, names: list[str], explicit: bool) -> list[lag_mod.GroupReport]:
    """The report of each group asked for; a missing one is an error or, by default, a note."""
    found: list[lag_mod.GroupReport] = []
    missing: list[lag_mod.GroupReport] = []
    for name in names:
        report = resolve(settings, name)
        (found if report.exists else missing).append(report)
    if missing and explicit:
        raise UnknownGroup("; ".join(_missing(settings, r.group) for r in missing))
    if not found:
        raise UnknownGroup(
            f"no stage has a consumer group at {settings.bootstrap_servers} yet "
            f"({', '.join(names)}): start a worker (`sluice worker orders`), or name a "
            "group with --group"
        )
    for report in missing:
        note(f"{_missing(settings, report.group)} (skipped)")
    return found


def resolve(settings: Settings, name: str) -> lag_mod.GroupReport:
    """The report of group `name`, looked up as `sluice consume` looks up a topic.

    With a topic prefix, a name without it means the group under the prefix (stage
    groups are `<prefix>sluice-orders`, ...); the name as given is the fallback, so a
    group outside the pipeline is still found. The first that exists wins.
    """
    prefix = settings.topic_prefix
    candidates = [name] if not prefix or name.startswith(prefix) else [prefix + name, name]
    reports = []
    for candidate in candidates:
        report = lag_mod.group_report(settings, candidate, timeout=settings.request_timeout_s)
        if report.exists:
            return report
        reports.append(report)
    return reports[0]


def _missing(settings: Settings, group: str) -> str:
    plain = settings.logical_topic(group)
    also = f" (nor {plain})" if plain != group else ""
    return (
        f"consumer group {group}{also} does not exist at {settings.bootstrap_servers}: "
        "no member has joined it and it has no committed offsets"
    )


def _row(r: lag_mod.PartitionLag) -> dict[str, Any]:
    member = r.member
    return {
        "group": r.group,
        "topic": r.topic,
        "partition": r.partition,
        "committed": r.committed,
        "end_offset": r.end_offset,
        "lag": r.reported_lag,
        "log_start": r.log_start,
        "consumer_id": member.consumer_id if member else None,
        "host": member.host if member else None,
        "client_id": member.client_id if member else None,
    }


def _show(reports: list[lag_mod.GroupReport], states: list[dict[str, Any]]) -> None:
    table = Table("group", "topic", "partition", "committed", "end offset", "lag", "consumer")
    for report in reports:
        for r in report.rows:
            table.add_row(
                r.group,
                r.topic,
                str(r.partition),
                _dash(r.committed),
                str(r.end_offset),
                _dash(r.reported_lag),
                f"{r.member.client_id} {r.member.host}" if r.member else "-",
            )
    console.print(table)
    for report in reports:
        console.print(_total_line(report), soft_wrap=True)
    for state in states:
        paused = ", ".join(state["paused_partitions"]) or "none"
        console.print(
            f"controller {state['stage']} ({state['worker']}): "
            f"{'PAUSED' if state['paused'] else 'running'}, watching "
            f"{state['watching']} lag {state['lag']} (high {state['high']}, "
            f"low {state['low']}), paused partitions: {paused}",
            soft_wrap=True,
        )


def _total_line(report: lag_mod.GroupReport) -> str:
    known = sum(r.reported_lag or 0 for r in report.rows)
    line = f"total lag of {report.group} ({report.state}): {known}"
    unread = [r for r in report.rows if r.committed is None]
    if unread:
        retained = sum(r.lag for r in unread)
        line += (
            f"; {len(unread)} assigned partition(s) not committed yet, "
            f"{retained} record(s) retained in them"
        )
    return line


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)


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
