"""`sluice worker STAGE`: run one Faust worker of a stage, supervised.

A thin supervisor: it runs `faust -A pipelines.<stage>:app worker` as a child process with
the port, name and brokers it was given, forwards Ctrl-C and SIGTERM, and returns the
child's exit code. Everything that makes a start safe (the table directory per worker,
the crash and cluster checks on local tables, the web port, the broker and the topics,
one line per failure) is the app's own start-up (`pipelines.runtime.startup`), so Faust's
own CLI gets exactly the same. A Faust worker can hang in shutdown when the broker is
gone, so the stop is bounded: after `--stop-timeout` seconds the child is killed and
that is reported, rather than the terminal hanging forever.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import types

import click

from pipelines.catalog import APP_IDS
from pipelines.cli.common import bootstrap_option, fail_line
from pipelines.runtime.faustapp import DEFAULT_WEB_PORTS

PR_SET_PDEATHSIG = 1


@click.command()
@click.argument("stage", type=click.Choice(sorted(APP_IDS)))
@click.option(
    "--web-port",
    "-p",
    type=click.IntRange(1024, 65535),
    default=None,
    help="Port for /health and /metrics (each worker on a host needs its own).  "
    "[default: orders 6066, notifications 6067, analytics 6068]",
)
@click.option(
    "--loglevel",
    "-l",
    type=click.Choice(["crit", "error", "warn", "info", "debug"]),
    default="info",
    show_default=True,
)
@click.option(
    "--stop-timeout",
    type=click.FloatRange(1),
    default=30.0,
    show_default=True,
    help="Seconds to wait for a clean stop before killing the worker.",
)
@click.option(
    "--name",
    default=None,
    envvar="SLUICE_WORKER_NAME",
    show_envvar=True,
    help="Worker name (its table directory).  [default: host-port]",
)
@bootstrap_option
def worker(
    *,
    stage: str,
    web_port: int | None,
    loglevel: str,
    stop_timeout: float,
    name: str | None,
    bootstrap_servers: str | None,
) -> None:
    """Run one worker of STAGE (orders, notifications, analytics) in its consumer group.

    Start more workers (each with its own --web-port) to scale: the group rebalances and
    spreads the partitions over them.
    """
    port = web_port or DEFAULT_WEB_PORTS[stage]
    env = {**os.environ, "SLUICE_WEB_PORT": str(port)}
    if bootstrap_servers:
        env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap_servers
    if name:
        env["SLUICE_WORKER_NAME"] = name
    cmd = [
        sys.executable,
        "-m",
        "faust",
        "--quiet",  # no banner: a start that fails says one line and nothing else
        "-A",
        f"pipelines.{stage}:app",
        "worker",
        "--web-port",
        str(port),
        # No --web-bind: the app binds `Settings.web_bind`, loopback unless told (a
        # container's probes and scrapers need SLUICE_WEB_BIND=0.0.0.0).
        "--loglevel",
        loglevel,
    ]
    raise click.exceptions.Exit(supervise(cmd, env, stop_timeout))


def die_with_parent() -> None:
    """In the child: have Linux SIGKILL it when the supervisor dies, even by SIGKILL.

    Without this, killing the supervisor would orphan a worker that keeps its partitions
    and its table directory locked, and a restarted worker could not take over.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the supervisor's own stop still works
        pass


def supervise(cmd: list[str], env: dict[str, str], stop_timeout: float) -> int:
    """Run `cmd`, forwarding SIGINT/SIGTERM once; kill it if it does not stop in time."""
    child = subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent)  # noqa: PLW1509
    stopping: list[int] = []

    def forward(signum: int, _frame: types.FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        stopping.append(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                return child.wait(timeout=stop_timeout if stopping else None)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                fail_line(f"worker did not stop within {stop_timeout:.0f}s and was killed")
                return 137
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
