"""`sluice providers up`: local SMTP and HTTP providers for the demo and for trying things.

They run in the foreground until Ctrl-C or SIGTERM, then print what they received in one
line (exit 0). Failure injection flags make them behave like a bad day at a real
provider: temporary failures, slow answers, hangs, rate limits with Retry-After.
"""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path
from typing import Any

import click

from pipelines.cli.common import console, note, print_json
from pipelines.providers import (
    HttpProviderConfig,
    ProvidersConfig,
    SmtpProviderConfig,
    run_providers,
)

ENV = "SLUICE_PROVIDERS_"


def _regex(ctx: click.Context, param: click.Parameter, value: str | None) -> re.Pattern[str] | None:
    if value is None:
        return None
    try:
        return re.compile(value)
    except re.error as exc:
        raise click.BadParameter(f"not a regular expression: {exc}") from None


@click.group()
def providers() -> None:
    """Local SMTP and HTTP (SMS, push) providers on 127.0.0.1 that record what they get.

    \b
    Examples:
      sluice providers up                                  SMTP :8025, HTTP :8026
      sluice providers up --failure-rate 0.3 --latency-ms 50   some sends fail: retries
    """


@providers.command()
@click.option(
    "--smtp-port",
    type=click.IntRange(0, 65535),
    default=8025,
    show_default=True,
    envvar=ENV + "SMTP_PORT",
    show_envvar=True,
    help="SMTP port (0: any free port).",
)
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    default=8026,
    show_default=True,
    envvar=ENV + "HTTP_PORT",
    show_envvar=True,
    help="HTTP port (0: any free port).",
)
@click.option(
    "--failure-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    envvar=ENV + "FAILURE_RATE",
    show_envvar=True,
    help="Share of requests failed temporarily (SMTP 451, HTTP 500).",
)
@click.option(
    "--latency-ms",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    envvar=ENV + "LATENCY_MS",
    show_envvar=True,
    help="Delay before each answer.",
)
@click.option(
    "--timeout-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    envvar=ENV + "TIMEOUT_RATE",
    show_envvar=True,
    help="Share of HTTP requests that hang until the client gives up.",
)
@click.option(
    "--rate-limit-every",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    envvar=ENV + "RATE_LIMIT_EVERY",
    show_envvar=True,
    help="Answer every Nth HTTP request with 429 (0: never).",
)
@click.option(
    "--retry-after",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    envvar=ENV + "RETRY_AFTER",
    show_envvar=True,
    help="Seconds in the Retry-After header of a 429.",
)
@click.option(
    "--reject-recipients",
    metavar="REGEX",
    default=None,
    callback=_regex,
    envvar=ENV + "REJECT_RECIPIENTS",
    show_envvar=True,
    help="Refuse matching recipients for good (SMTP 550, HTTP 400).",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar=ENV + "RECORD",
    show_envvar=True,
    help="Append every receipt to this file as JSON lines.",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    envvar=ENV + "SEED",
    show_envvar=True,
    help="Seed for the random failures (same seed, same sequence).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the final stats as JSON.")
def up(*, as_json: bool, **flags: Any) -> None:
    """Run both providers until Ctrl-C or SIGTERM, then print a summary of receipts.

    \b
    SMTP:  <host>:<smtp-port>, one receipt per accepted mail
    HTTP:  POST /sms, POST /push; GET /stats (counts as JSON), GET /health
    """
    stats = asyncio.run(_serve(_config(**flags)))
    if as_json:
        print_json(stats)
    else:
        console.print(f"providers stopped: {stats['summary']}", soft_wrap=True)


def _config(
    *,
    smtp_port: int,
    http_port: int,
    failure_rate: float,
    latency_ms: int,
    timeout_rate: float,
    rate_limit_every: int,
    retry_after: int,
    reject_recipients: re.Pattern[str] | None,
    record: Path | None,
    seed: int | None,
) -> ProvidersConfig:
    """The providers' configuration from the command's flags."""
    return ProvidersConfig(
        smtp_port=smtp_port,
        http_port=http_port,
        smtp=SmtpProviderConfig(
            failure_rate=failure_rate, latency_ms=latency_ms, reject_recipients=reject_recipients
        ),
        http=HttpProviderConfig(
            failure_rate=failure_rate,
            latency_ms=latency_ms,
            timeout_rate=timeout_rate,
            rate_limit_every=rate_limit_every,
            retry_after_s=retry_after,
            bad_request_recipients=reject_recipients,
        ),
        record=record,
        seed=seed,
    )


async def _serve(config: ProvidersConfig) -> dict[str, Any]:
    """Start, announce where, wait for SIGINT/SIGTERM, stop; return the final stats."""
    handle = await run_providers(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        console.print(f"SMTP provider: {handle.smtp_host}:{handle.smtp_port}", soft_wrap=True)
        console.print(
            f"HTTP provider: {handle.http_url}  (POST /sms, /push; GET /stats)", soft_wrap=True
        )
        if config.record:
            note(f"recording receipts to {config.record}")
        note("press Ctrl-C to stop")
        await stopping.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await handle.stop()
    return {**handle.receipts.stats(), "summary": handle.receipts.summary()}
