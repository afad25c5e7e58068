"""`sluice serve intake`: the HTTP order intake.

Its knobs are options with `SLUICE_INTAKE_*` environment fallbacks (shown in `--help`)
rather than fields of the main Settings, which only carries what every process shares;
the Kafka connection still comes from Settings and `--bootstrap-servers`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pipelines.cli.common import F, bootstrap_option, make_settings, note
from producers.intake.config import IntakeConfig

DEFAULTS = {name: spec.default for name, spec in IntakeConfig.model_fields.items()}


def _option(name: str, *decls: str, **kw: Any) -> Callable[[F], F]:
    """An option for IntakeConfig field `name`: its default, description and env var."""
    flag = "--" + name.replace("_", "-").removesuffix("-s")
    return click.option(
        flag,
        name,
        *decls,
        default=DEFAULTS[name],
        show_default=True,
        envvar=f"SLUICE_INTAKE_{name.upper()}",
        show_envvar=True,
        help=IntakeConfig.model_fields[name].description,
        **kw,
    )


@click.group()
def serve() -> None:
    """Serve Sluice over HTTP.

    \b
    Examples:
      sluice serve intake --port 8080
      SLUICE_INTAKE_OVERLOAD=queue sluice serve intake   every option has an env var
    """


@serve.command()
@_option("host")
@_option("port", type=click.IntRange(0, 65535))
@_option("max_body_bytes", type=click.IntRange(1024))
@_option("max_lines", type=click.IntRange(1))
@_option("idempotency_window_s", type=click.FloatRange(min=1), metavar="SECONDS")
@_option("idempotency_max_keys", type=click.IntRange(1))
@_option("status_max_orders", type=click.IntRange(1))
@_option("overload", type=click.Choice(["shed", "queue"]))
@_option("queue_limit", type=click.IntRange(1))
@_option("queue_timeout_s", type=click.FloatRange(min=0.1), metavar="SECONDS")
@_option("delivery_timeout_s", type=click.FloatRange(1, 300), metavar="SECONDS")
@_option("linger_ms", type=click.FloatRange(0, 1000))
@_option("startup_timeout_s", type=click.FloatRange(min=1), metavar="SECONDS")
@bootstrap_option
def intake(*, bootstrap_servers: str | None, **options: Any) -> None:
    """Accept orders at POST /orders; status at GET /orders/{id}; spec at /openapi.json.

    \b
    An order is answered 202 only after the broker acknowledged it on orders.placed.
    Idempotency-Keys are remembered for --idempotency-window (re-read from orders.placed
    at start); while the order stage lags above the backpressure high mark
    (SLUICE_BACKPRESSURE), new orders get 429 with Retry-After, or wait with
    --overload queue. /health and /metrics as on the workers.
    """
    from producers.intake import serve as run_intake
    from producers.sender import require_topics

    config = IntakeConfig(**options)
    settings = make_settings(bootstrap_servers)
    require_topics(settings, "orders.placed", "orders.status")
    run_intake(settings, config, note)
