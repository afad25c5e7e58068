"""A real HTTP provider on 127.0.0.1 for SMS and push, with failures on request.

`POST /sms` and `POST /push` take the JSON an `HttpSender` posts and answer
`{"id": ...}`; `GET /stats` shows what was received and `GET /health` says it is up.
Each failure a real provider has can be switched on: 400 for recipients matching a
pattern, 429 with `Retry-After` on every Nth request, 500 at random, a hang longer than
any sane client timeout, and slow answers. All of them are decided before a receipt is
recorded, so a failed request is never counted as delivered. A slow answer is the
exception by design: the receipt is recorded after the delay, as a real provider
would, so a client that gives up early and retries shows up as a duplicate.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from email.utils import formatdate
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from pipelines.httperrors import BoundaryRunner
from pipelines.providers.receipts import Receipt, ReceiptLog, now_ms

HOST = "127.0.0.1"
CHANNELS = {"/sms": "SMS", "/push": "PUSH"}


class HttpProviderConfig(BaseModel):
    """How the local HTTP provider misbehaves (all off by default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_rate: float = Field(0.0, ge=0.0, le=1.0, description="Share answered 500.")
    timeout_rate: float = Field(0.0, ge=0.0, le=1.0, description="Share that hang.")
    timeout_hold_s: float = Field(30.0, gt=0, description="How long a hanging request hangs.")
    latency_ms: int = Field(0, ge=0, description="Delay before every successful answer.")
    rate_limit_every: int = Field(0, ge=0, description="Every Nth request gets 429 (0: never).")
    retry_after_s: int = Field(1, ge=0, description="The Retry-After a 429 carries.")
    retry_after_as_date: bool = Field(False, description="Send Retry-After as an HTTP-date.")
    bad_request_recipients: re.Pattern[str] | None = Field(
        None, description="Recipients matching this regex get 400."
    )
    auth: tuple[str, str] | None = Field(
        None, description="Header name and value every request must carry (else 401)."
    )


class HttpProvider:
    """The server: `await start()`, use `port`/`url`, `await stop()`."""

    def __init__(
        self,
        config: HttpProviderConfig | None = None,
        log: ReceiptLog | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        self.config = config or HttpProviderConfig()
        self.log = log if log is not None else ReceiptLog()
        self._rng = random.Random(seed)
        self._requests = 0
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The port the server listens on (the real one when started with 0)."""
        if self._runner is None:
            raise RuntimeError("the HTTP provider is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:8026`."""
        return f"http://{HOST}:{self.port}"

    def app(self) -> web.Application:
        """The aiohttp application (also usable with aiohttp's test client)."""
        app = web.Application()
        app.router.add_post("/sms", self._deliver)
        app.router.add_post("/push", self._deliver)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/health", self._health)
        return app

    async def start(self, port: int = 0) -> int:
        """Listen on 127.0.0.1:`port` (0 for any free port); return the port.

        A short shutdown timeout: requests hanging on purpose must not hold up `stop`.
        """
        runner = BoundaryRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, HOST, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        return self._port

    async def stop(self) -> None:
        """Stop listening; requests still hanging are cancelled."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _deliver(self, request: web.Request) -> web.Response:
        channel = CHANNELS[request.path]
        self._requests += 1
        number = self._requests
        payload = await _json_object(request)
        refusal = self._refusal(request, payload)
        if refusal is None:
            refusal = await self._injected(number, str(payload.get("recipient")))
        if refusal is not None:
            self.log.failed(channel, str(refusal.status))
            return refusal
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)
        provider_id = self.log.next_provider_id(channel.lower())
        self.log.record(_receipt(channel, payload, provider_id))
        return web.json_response({"id": provider_id, "status": "accepted"})

    def _refusal(self, request: web.Request, payload: dict[str, Any]) -> web.Response | None:
        """401 without the expected auth, 400 for a malformed body or a refused recipient."""
        auth = self.config.auth
        if auth is not None and request.headers.get(auth[0]) != auth[1]:
            return _error(401, "missing or wrong credentials")
        for field in ("notification_id", "recipient", "text"):
            if not isinstance(payload.get(field), str) or not payload[field]:
                return _error(400, f"{field} is required")
        pattern = self.config.bad_request_recipients
        if pattern is not None and pattern.search(payload["recipient"]):
            return _error(400, "recipient refused")
        return None

    async def _injected(self, number: int, recipient: str) -> web.Response | None:
        """A failure chosen by configuration and the seeded draws, or None to deliver.

        Both random draws happen on every request, so one seed gives the same sequence of
        outcomes whatever the rates are.
        """
        hang, fail = self._rng.random(), self._rng.random()
        every = self.config.rate_limit_every
        if every and number % every == 0:
            headers = {"Retry-After": self._retry_after()}
            return _error(429, "rate limited", headers=headers)
        if hang < self.config.timeout_rate:
            await asyncio.sleep(self.config.timeout_hold_s)
            return _error(504, "gave up")
        if fail < self.config.failure_rate:
            return _error(500, "internal error (injected)")
        return None

    def _retry_after(self) -> str:
        seconds = self.config.retry_after_s
        if self.config.retry_after_as_date:
            return formatdate(now_ms() / 1000 + seconds, usegmt=True)
        return str(seconds)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.log.stats())

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON body if it is an object, else an empty dict (answered 400).

    Read as bytes and parsed as JSON text (UTF-8, whatever charset the Content-Type
    claims): an unknown charset, invalid UTF-8, a number too long to convert or absurd
    nesting are all just "not a JSON object" here. A body that cannot be read at all
    (bad chunking, a false Content-Encoding) is left to the error boundary's 400.
    """
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _receipt(channel: str, payload: dict[str, Any], provider_id: str) -> Receipt:
    return Receipt(
        notification_id=payload["notification_id"],
        channel=channel,
        recipient=payload["recipient"],
        subject=None,
        body=payload["text"],
        received_at_ms=now_ms(),
        provider_id=provider_id,
    )
