"""The `sluice` command: one entry point, one module per subcommand group.

Errors leave as one line on stderr and a non-zero exit code; a traceback is a bug report,
not a user message. Every command that talks to Kafka takes `--bootstrap-servers`
(falling back to `KAFKA_BOOTSTRAP_SERVERS`), so the same commands work against the local
broker and any existing cluster.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from pipelines.cli.common import configure_logging, err_console, fail_line, refuse_non_finite
from pipelines.cli.config import config
from pipelines.cli.consume import consume
from pipelines.cli.demo import demo
from pipelines.cli.dlq import dlq
from pipelines.cli.kafka import kafka
from pipelines.cli.lag import lag
from pipelines.cli.produce import produce
from pipelines.cli.providers import providers
from pipelines.cli.replay import replay
from pipelines.cli.schemas import schemas
from pipelines.cli.serve import serve
from pipelines.cli.topics import topics
from pipelines.cli.worker import worker
from pipelines.errors import explain

log = logging.getLogger("sluice.cli")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="sluice")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Sluice: asynchronous order processing, notifications and analytics on Apache Kafka.

    \b
    Start here:
      sluice kafka up          start a local Apache Kafka (KRaft) on 127.0.0.1:9092
      sluice topics create     create every pipeline topic from the catalog
      sluice demo              run the main job end to end and print a summary

    Every setting can come from the environment (KAFKA_BOOTSTRAP_SERVERS,
    SLUICE_TOPIC_PREFIX, SLUICE_BACKPRESSURE__HIGH, ...): `sluice config` lists them
    all. Errors are one `error:` line; exit 2 for bad flags or settings, 1 for any
    other failure, 130 on Ctrl-C; -vv adds the debug log with tracebacks.
    """
    configure_logging(verbose)


cli.add_command(kafka)
cli.add_command(topics)
cli.add_command(demo)
cli.add_command(dlq)
cli.add_command(produce)
cli.add_command(consume)
cli.add_command(providers)
cli.add_command(schemas)
cli.add_command(worker)
cli.add_command(replay)
cli.add_command(lag)
cli.add_command(config)
cli.add_command(serve)
refuse_non_finite(cli)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and turn failures into one line and a code."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this directly).

    This is the CLI's one error boundary: whatever a subcommand raises leaves as one
    `error:` line on stderr and an exit code (2 for bad flags or settings, 1 for the
    rest, 130 for Ctrl-C), with the traceback only in the debug log (`-vv`). Click's
    own usage errors keep their usage hint. A closed stdout (`sluice consume ... | head`)
    is not worth a line: the command stops quietly with exit 1, as click does.
    """
    try:
        result = cli.main(args=argv, prog_name="sluice", standalone_mode=False)
    except BaseException as exc:  # the boundary: sorted out below, re-raised if foreign
        return _exit_code(exc, argv)
    return result if isinstance(result, int) else 0


def _exit_code(exc: BaseException, argv: list[str] | None) -> int:
    """Say what went wrong in one line (click's usage errors in its words); the code."""
    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code
    if isinstance(exc, click.ClickException):
        exc.show()
        return exc.exit_code
    if isinstance(exc, (click.Abort, KeyboardInterrupt)):
        err_console.print("interrupted")
        return 130
    if isinstance(exc, SystemExit):  # click's own exit on a closed pipe, or a library's
        if isinstance(exc.code, str):
            fail_line(exc.code)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    if not isinstance(exc, Exception):
        raise exc
    if isinstance(exc, BrokenPipeError):  # click handles it inside a command; this is the rest
        _silence_stdout()
        return 1
    line, code = _kafka_problem(exc) or explain(exc)
    log.debug("sluice %s failed", " ".join(argv or sys.argv[1:]), exc_info=exc)
    fail_line(line)
    return code


def _kafka_problem(exc: Exception) -> tuple[str, int] | None:
    """A Kafka client's own refusal in its own words: a configuration it rejects (a CA
    file it cannot read, say) is a settings problem (2), anything else a failure (1)."""
    from confluent_kafka import KafkaError, KafkaException

    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if not isinstance(error, KafkaError):
        return None
    if error.code() in (KafkaError._INVALID_ARG, KafkaError._INVALID_TYPE):
        return f"the Kafka client refused its settings: {error.str()}", 2
    return f"Kafka: {error.str()}", 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (a test's captured stdout)
        pass
