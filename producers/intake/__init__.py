"""The HTTP order intake: `POST /orders` in milliseconds, processing in the background.

Built on aiohttp rather than FastAPI/uvicorn: Faust already depends on aiohttp (the
stages' web pages run on it), so the intake adds no server stack, no ASGI layer and no
second set of HTTP dependencies to pin, and shares the stages' deployment and metrics
habits. The OpenAPI document that FastAPI would derive from pydantic models is derived
here from the Avro schemas instead, which are the real source of truth for the shapes.

Modules: `config` (knobs), `validation` (body to record), `idempotency` (keys),
`publisher` (awaited idempotent producer), `gate` (backpressure), `status` (order
status view), `service` (the behaviour), `openapi`, `metrics`, `app` (HTTP).
"""

from producers.intake.app import create_app, serve
from producers.intake.config import IntakeConfig
from producers.intake.service import Accepted, Intake
from producers.intake.validation import Rejection

__all__ = ["Accepted", "Intake", "IntakeConfig", "Rejection", "create_app", "serve"]
