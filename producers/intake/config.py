"""The intake's own knobs: limits, idempotency window, overload mode, producer latency.

They live apart from `pipelines.settings.Settings` on purpose: only the HTTP front door
needs them, and `Settings` forbids unknown keys, so `SLUICE_INTAKE__*` cannot be read
there. `sluice serve intake` fills this model from its options (each with an
environment fallback shown in `--help`); the Kafka side still comes from `Settings`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DAY_S = 24 * 3600.0


class IntakeConfig(BaseModel):
    """Everything the HTTP intake decides on its own; frozen, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Address to bind (loopback unless told).")
    port: int = Field(8080, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    max_body_bytes: int = Field(
        64 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest request body accepted."
    )
    max_lines: int = Field(100, ge=1, le=10_000, description="Most order lines per order.")
    idempotency_window_s: float = Field(
        DAY_S, gt=0, description="How long an Idempotency-Key is remembered."
    )
    idempotency_max_keys: int = Field(
        500_000, ge=1, description="Most keys kept in memory (oldest forgotten first)."
    )
    status_max_orders: int = Field(
        500_000, ge=1, description="Most orders the status view keeps (oldest forgotten first)."
    )
    overload: Literal["shed", "queue"] = Field(
        "shed", description="While the pipeline lags: answer 429 at once, or hold requests."
    )
    queue_limit: int = Field(
        1000, ge=1, description="In queue mode: most requests held while paused."
    )
    queue_timeout_s: float = Field(
        30.0, gt=0, description="In queue mode: longest a held request waits before 503."
    )
    delivery_timeout_s: float = Field(
        10.0, ge=1, le=300, description="Longest wait for the broker's acknowledgement."
    )
    linger_ms: float = Field(
        2.0, ge=0, le=1000, description="Producer batching delay: latency against throughput."
    )
    startup_timeout_s: float = Field(
        60.0, gt=0, description="Longest the start may take to re-read recent keys."
    )

    @model_validator(mode="after")
    def _queue_fits_window(self) -> IntakeConfig:
        if self.queue_timeout_s >= self.idempotency_window_s:
            raise ValueError("queue timeout must be shorter than the idempotency window")
        return self
