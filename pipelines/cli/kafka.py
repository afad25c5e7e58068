"""`sluice kafka up|status|down`: the local Apache Kafka, and a look at any cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

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


@click.group()
def kafka() -> None:
    """Run a local Apache Kafka (KRaft, from Maven) or inspect a cluster.

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
@data_dir_option
def up(
    *,
    brokers: str | None,
    port: int | None,
    heap_mb: int | None,
    timeout: float,
    data_dir: Path | None,
) -> None:
    """Start the local Kafka and wait until it answers; print its bootstrap servers.

    Safe to repeat: on a running cluster it says so and exits 0. Data survives `down`
    (use `down --purge` to start empty).
    """
    settings = make_settings()
    root = kafka_root(settings, data_dir)
    cluster = LocalCluster(
        root,
        int(brokers) if brokers else None,
        port,
        heap_mb=heap_mb,
        partitions=settings.partitions,
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
                        f"PLAINTEXT://{n.bootstrap}",
                        f"CONTROLLER://127.0.0.1:{n.controller_port}",
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
        console.print(f"[red]down[/]: {report['error']}")
        return
    table = Table(title=f"Kafka at {report['bootstrap_servers']}", show_header=False)
    table.add_row("cluster id", str(report["cluster_id"]))
    table.add_row("controller", f"node {report['controller']}")
    for bid, addr in report["brokers"].items():
        table.add_row(f"broker {bid}", f"PLAINTEXT://{addr}")
    local = report.get("local")
    table.add_row("Kafka version", local["kafka_version"] if local else "n/a (not a local cluster)")
    table.add_row("topics", str(report["topics"]))
    if local:
        table.add_row("data dir", local["data_dir"])
    console.print(table)
