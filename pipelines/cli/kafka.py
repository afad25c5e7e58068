"""`sluice kafka up|status|down`: the local Apache Kafka, and a look at any cluster."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from pipelines.acls import apply_acls, grants
from pipelines.admin import describe_cluster
from pipelines.cli.common import (
    bootstrap_option,
    console,
    data_dir_option,
    json_option,
    kafka_root,
    make_settings,
    note,
    print_json,
)
from pipelines.errors import BrokerUnavailable
from pipelines.localkafka import LocalCluster
from pipelines.localkafka.secure import ADMIN, CLIENTS


@click.group()
def kafka() -> None:
    """Run a local Apache Kafka (KRaft, from Maven) or inspect a cluster.

    \b
    Examples:
      sluice kafka up                   one broker+controller on 127.0.0.1:9092
      sluice kafka up --brokers 3       a three-node quorum, for fault tests
      sluice kafka status --json        exit 1 when nobody answers
      sluice kafka down --purge         stop, and delete data and logs

    The broker's jars come from deploy/local/pom.xml through Maven (Java 17+ and Maven
    are needed; the first `up` downloads the jars, later ones start in seconds).
    """


@kafka.command()
@click.option(
    "--brokers",
    type=click.Choice(["1", "3"]),
    default=None,
    help="Nodes (each broker+controller); 3 for fault tests.  [default: 1]",
)
@click.option(
    "--port",
    type=click.IntRange(1024, 65000),
    default=None,
    help="Client port of the first node; node i uses port+2i, controllers port+2i+1."
    "  [default: 9092]",
)
@click.option(
    "--heap-mb",
    type=click.IntRange(128, 8192),
    default=None,
    envvar="SLUICE_KAFKA_HEAP_MB",
    show_envvar=True,
    help="JVM heap per node.  [default: 384, or 256 each for 3]",
)
@click.option(
    "--timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds to wait for the brokers to answer.",
)
@click.option(
    "--secure",
    is_flag=True,
    help="SASL_SSL (SCRAM-SHA-512) client listener, mTLS controller listener, ACLs of least "
    "privilege; a throwaway CA, certificates and one user per stage are made on first use.",
)
@data_dir_option
def up(
    *,
    brokers: str | None,
    port: int | None,
    heap_mb: int | None,
    timeout: float,
    secure: bool,
    data_dir: Path | None,
) -> None:
    """Start the local Kafka and wait until it answers; print its bootstrap servers.

    Safe to repeat: on a running cluster it says so and exits 0. Data survives `down`
    (use `down --purge` to start empty). With --secure, each principal's client settings
    are written to `<data dir>/secure/<principal>.env`; load one with
    `set -a; . <file>; set +a` and every sluice command logs in as that principal.
    """
    settings = make_settings()
    root = kafka_root(settings, data_dir)
    cluster = LocalCluster(
        root,
        int(brokers) if brokers else None,
        port,
        heap_mb=heap_mb,
        partitions=settings.partitions,
        secure=True if secure else None,
        progress=note,
    )
    result = cluster.up(timeout=timeout)
    state = cluster.state()
    version = state.kafka_version if state else "?"
    if result.already_running:
        console.print(f"Kafka is already running at {result.bootstrap} ({root})")
    else:
        console.print(
            f"Kafka {version} started in "
            f"{result.seconds:.1f}s with {cluster.brokers} node(s); logs in {root}"
        )
    console.print(f"bootstrap servers: {result.bootstrap}")
    if cluster.secure:
        _secure_summary(cluster, settings.topic_prefix)


def _secure_summary(cluster: LocalCluster, prefix: str) -> None:
    """Apply the ACLs and say where each principal's settings are (never the passwords)."""
    count = apply_acls(cluster.client_settings(ADMIN), prefix)
    console.print(
        f"security: SASL_SSL with SCRAM-SHA-512; {count} ACL entries for prefix {prefix!r}"
    )
    for principal in (ADMIN, *CLIENTS):
        console.print(f"  {principal:<14} {cluster.material.env_file(principal)}")
    console.print("load one with: set -a; . <file>; set +a")


@kafka.command()
@click.option(
    "--topic-prefix",
    default=None,
    help="The pipeline's topic/group prefix.  [default: SLUICE_TOPIC_PREFIX, or none]",
)
@click.option("--dry-run", is_flag=True, help="Print the entries; create nothing.")
@bootstrap_option
@data_dir_option
@json_option
def acls(
    topic_prefix: str | None,
    dry_run: bool,
    bootstrap_servers: str | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Create the least-privilege ACLs of every stage's principal (safe to repeat).

    Runs as the admin principal: the local secure cluster's admin, or whoever
    SLUICE_SECURITY__* names. Each principal may read its inputs, write its outputs, use
    its own group and internal topics, and nothing else; --dry-run shows the list.
    """
    settings = make_settings(bootstrap_servers)
    prefix = settings.topic_prefix if topic_prefix is None else topic_prefix
    entries = grants(prefix)
    if dry_run:
        rows = [dataclasses.asdict(g) for g in entries]
        if as_json:
            print_json(rows)
        else:
            for g in entries:
                console.print(
                    f"User:{g.principal:<14} {g.operation:<9} {g.resource} {g.pattern} {g.name}"
                )
        return
    local = LocalCluster(kafka_root(settings, data_dir))
    if local.secure and not bootstrap_servers and settings.security.protocol == "PLAINTEXT":
        settings = local.client_settings(ADMIN)
    describe_cluster(settings)  # one clear line when nobody answers, not one per ACL
    count = apply_acls(settings, prefix)
    console.print(
        f"{count} ACL entries in place for prefix {prefix!r} at {settings.bootstrap_servers}"
    )


@kafka.command()
@click.option("--purge", is_flag=True, help="Also delete the cluster's data and logs.")
@data_dir_option
def down(purge: bool, data_dir: Path | None) -> None:
    """Stop the local Kafka cleanly (SIGTERM, SIGKILL after 30 s)."""
    root = kafka_root(make_settings(), data_dir)
    cluster = LocalCluster(root)
    running = cluster.running_nodes()
    for line in cluster.down(purge=purge):
        note(line)
    if running:
        console.print(f"stopped {len(running)} Kafka node(s) in {root}")
    else:
        console.print(f"no local Kafka was running in {root}")
    if purge:
        console.print(f"removed {root}")


@kafka.command()
@bootstrap_option
@data_dir_option
@json_option
def status(bootstrap_servers: str | None, data_dir: Path | None, as_json: bool) -> None:
    """Brokers, listeners, Kafka version and topic count; exit 1 if nobody answers."""
    settings = make_settings(bootstrap_servers)
    local = LocalCluster(kafka_root(settings, data_dir))
    state = local.state()
    if state is not None and not bootstrap_servers:
        if local.secure and settings.security.protocol == "PLAINTEXT":
            settings = local.client_settings(ADMIN)
        else:
            settings = make_settings(local.bootstrap)
    report: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers, "up": False}
    if state is not None:
        report["local"] = {
            "data_dir": str(local.root),
            "kafka_version": state.kafka_version,
            "nodes": {
                n.node_id: {
                    "pid": state.pids.get(str(n.node_id)),
                    "running": n.node_id in local.running_nodes(),
                    "listeners": [
                        f"{'SASL_SSL' if local.secure else 'PLAINTEXT'}://{n.bootstrap}",
                        f"CONTROLLER{'(mTLS)' if local.secure else ''}://127.0.0.1:{n.controller_port}",
                    ],
                }
                for n in local.nodes
            },
        }
    try:
        info = describe_cluster(settings, timeout=5.0)
    except BrokerUnavailable as exc:
        report["error"] = str(exc)
        _show_status(report, as_json)
        raise click.exceptions.Exit(1) from None
    report.update(
        up=True,
        cluster_id=info.cluster_id,
        controller=info.controller_id,
        brokers=dict(info.brokers),
        topics=info.topic_count,
    )
    _show_status(report, as_json)


def _show_status(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(report)
        return
    if not report["up"]:
        # the answer of a status command, so on stdout: one line, never read as markup
        console.print(Text.assemble(("down", "red"), f": {report['error']}"), soft_wrap=True)
        return
    table = Table(title=f"Kafka at {report['bootstrap_servers']}", show_header=False)
    table.add_row("cluster id", str(report["cluster_id"]))
    table.add_row("controller", f"node {report['controller']}")
    for bid, addr in report["brokers"].items():
        table.add_row(f"broker {bid}", addr)
    local = report.get("local")
    table.add_row("Kafka version", local["kafka_version"] if local else "n/a (not a local cluster)")
    table.add_row("topics", str(report["topics"]))
    if local:
        table.add_row("data dir", local["data_dir"])
    console.print(table)
