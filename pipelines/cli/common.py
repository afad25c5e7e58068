"""Pieces every subcommand shares: consoles, the Kafka connection options, settings."""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.text import Text

from pipelines.clientdiag import RepeatFilter
from pipelines.errors import StorageError
from pipelines.settings import Settings

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail_line(message: str) -> None:
    """Print an error as one `error: ...` line on stderr, never interpreting markup in it.

    Lone surrogates (from a user's JSON, say) are escaped, or printing the error about
    them would itself fail; the message is folded onto one line.
    """
    text = " ".join(message.encode("utf-8", "backslashreplace").decode("utf-8").splitlines())
    err_console.print(Text.assemble(("error: ", "bold red"), text))


class FiniteFloatRange(click.FloatRange):
    """A float range that refuses `nan` and `inf`: click's range checks let both through
    (`nan < 0` is false), and a rate or timeout of either never ends well."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        converted = super().convert(value, param, ctx)
        if not math.isfinite(converted):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return converted


def refuse_non_finite(group: click.Group) -> None:
    """Make every float parameter under `group` a `FiniteFloatRange`, bounds kept.

    Done once over the whole command tree, so a command added later is covered too.
    """
    for command in group.commands.values():
        for param in command.params:
            kind = param.type
            if isinstance(kind, FiniteFloatRange) or not isinstance(
                kind, click.types.FloatParamType
            ):
                continue
            if isinstance(kind, click.FloatRange):
                param.type = FiniteFloatRange(
                    kind.min, kind.max, kind.min_open, kind.max_open, kind.clamp
                )
            else:
                param.type = FiniteFloatRange()
        if isinstance(command, click.Group):
            refuse_non_finite(command)


def note(message: str) -> None:
    """Progress for humans on stderr, so stdout stays clean for `--json` and pipes."""
    err_console.print(Text(message, style="dim"))


def configure_logging(verbose: int) -> None:
    """Warnings and errors by default (librdkafka's transient retries stay quiet), more with -v."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    client_log = logging.getLogger("sluice.kafka")
    client_log.setLevel(logging.ERROR if verbose == 0 else level)
    if verbose == 0 and not any(isinstance(f, RepeatFilter) for f in client_log.filters):
        client_log.addFilter(RepeatFilter())


def bootstrap_option(func: F) -> F:
    """`--bootstrap-servers`, falling back to KAFKA_BOOTSTRAP_SERVERS, shown in --help."""
    return click.option(
        "--bootstrap-servers",
        "-b",
        envvar="KAFKA_BOOTSTRAP_SERVERS",
        show_envvar=True,
        default=None,
        metavar="HOST:PORT[,...]",
        help="Kafka brokers to talk to.  [default: 127.0.0.1:9092]",
    )(func)


def data_dir_option(func: F) -> F:
    """`--data-dir` for the local broker's files."""
    return click.option(
        "--data-dir",
        envvar="SLUICE_KAFKA_DIR",
        show_envvar=True,
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where the local broker keeps data and logs.  [default: ~/.local/share/sluice/kafka]",
    )(func)


def json_option(func: F) -> F:
    """`--json` for output meant for another program."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        func
    )


def make_settings(bootstrap_servers: str | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with flags given on the command line taking priority."""
    if bootstrap_servers:
        overrides["bootstrap_servers"] = bootstrap_servers
    return Settings(**overrides)


def kafka_root(settings: Settings, data_dir: Path | None) -> Path:
    """The local cluster's directory: `--data-dir`, else `<data dir>/kafka`."""
    return data_dir if data_dir is not None else settings.data_dir / "kafka"


def check_writable(path: Path, flag: str) -> None:
    """Refuse at once an output file that cannot be written, not after a long run.

    Really opens it (appending, so nothing is lost; a new file is removed again), since
    permission bits say little to root or on a read-only mount. A disk that fills up
    later still stops the final write: that, too, is one `error:` line.
    """
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StorageError(
            f"{flag} {path} cannot be written: {reason}; give another path"
        ) from None
    if not existed:
        path.unlink(missing_ok=True)


def print_json(payload: Any) -> None:
    """JSON on stdout, one document, for pipes."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
