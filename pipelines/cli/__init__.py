"""The `sluice` command: one entry point, one module per subcommand group.

Errors leave as one line on stderr and a non-zero exit code; a traceback is a bug report,
not a user message. Every command that talks to Kafka takes `--bootstrap-servers`
(falling back to `KAFKA_BOOTSTRAP_SERVERS`), so the same commands work against the local
broker and any existing cluster.
"""

from __future__ import annotations

import sys

import click
from pydantic import ValidationError

from pipelines.cli.common import configure_logging, err_console, fail_line
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
from pipelines.errors import SluiceError, explain


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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and turn failures into one line and a code."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this directly)."""
    try:
        result = cli.main(args=argv, prog_name="sluice", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        return 130
    except (SluiceError, ValidationError, OSError) as exc:
        line, code = explain(exc)
        fail_line(line)
        return code
    return result if isinstance(result, int) else 0
