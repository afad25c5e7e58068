"""Start and stop both local providers together, in this loop or a background thread.

`run_providers` is for async code (the `sluice providers up` command); the
`providers_in_thread` context manager is for sync code (tests, the demo): it runs the
providers in their own event loop on a daemon thread, so they keep answering while the
caller blocks, and it always stops them and joins the thread on the way out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipelines.delivery.settings import DeliverySettings, HttpSettings, SmtpSettings
from pipelines.errors import SluiceError
from pipelines.providers.http import HOST, HttpProvider, HttpProviderConfig
from pipelines.providers.receipts import ReceiptLog
from pipelines.providers.smtp import SmtpProvider, SmtpProviderConfig


class ProvidersError(SluiceError):
    """The local providers could not start (typically: a port is taken)."""


class ProvidersConfig(BaseModel):
    """Ports, failure injection and recording for both local providers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    smtp_port: int = Field(8025, ge=0, le=65535, description="0 picks a free port.")
    http_port: int = Field(8026, ge=0, le=65535, description="0 picks a free port.")
    smtp: SmtpProviderConfig = Field(default_factory=SmtpProviderConfig)
    http: HttpProviderConfig = Field(default_factory=HttpProviderConfig)
    record: Path | None = Field(None, description="Append every receipt here as JSON lines.")
    seed: int | None = Field(None, description="Seed for the random failures.")


class ProvidersHandle:
    """Running providers: where they listen, what they received, and how to stop them."""

    def __init__(self, smtp: SmtpProvider, http: HttpProvider, receipts: ReceiptLog) -> None:
        self._smtp = smtp
        self._http = http
        self.receipts = receipts
        self.smtp_host = HOST
        self.smtp_port = smtp.port
        self.http_port = http.port
        self.http_url = http.url

    @property
    def sms_url(self) -> str:
        """Where SMS go: `<http_url>/sms`."""
        return f"{self.http_url}/sms"

    @property
    def push_url(self) -> str:
        """Where push notifications go: `<http_url>/push`."""
        return f"{self.http_url}/push"

    def delivery_settings(self, *, http_timeout_s: float = 5.0) -> DeliverySettings:
        """Delivery settings that send to these providers."""
        return DeliverySettings(
            smtp=SmtpSettings(host=self.smtp_host, port=self.smtp_port),
            http=HttpSettings(
                sms_url=self.sms_url, push_url=self.push_url, timeout_s=http_timeout_s
            ),
        )

    async def stop(self) -> None:
        """Stop both servers (idempotent)."""
        await self._http.stop()
        await self._smtp.stop()


async def run_providers(config: ProvidersConfig | None = None) -> ProvidersHandle:
    """Start the SMTP and HTTP providers on 127.0.0.1 and return their handle."""
    config = config or ProvidersConfig()
    log = ReceiptLog(config.record)
    seed = config.seed
    smtp = SmtpProvider(config.smtp, log, seed=seed)
    http = HttpProvider(config.http, log, seed=None if seed is None else seed + 1)
    await _listen(smtp.start, config.smtp_port, "SMTP")
    try:
        await _listen(http.start, config.http_port, "HTTP")
    except BaseException:
        await smtp.stop()
        raise
    return ProvidersHandle(smtp, http, log)


async def _listen(start: Callable[[int], Awaitable[int]], port: int, what: str) -> None:
    """Run a provider's `start(port)`, turning a taken port into one readable error."""
    try:
        await start(port)
    except OSError as exc:
        msg = f"the local {what} provider cannot listen on {HOST}:{port}: {exc.strerror or exc}"
        raise ProvidersError(msg) from exc


@contextmanager
def providers_in_thread(
    config: ProvidersConfig | None = None, *, timeout_s: float = 10.0
) -> Iterator[ProvidersHandle]:
    """Run the providers on a background thread's event loop for the `with` block.

    The handle's `receipts` can be read from any thread. On exit the servers stop, the
    loop's leftover tasks are cancelled, the loop closes and the thread is joined.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sluice-providers", daemon=True)
    thread.start()
    try:
        handle = asyncio.run_coroutine_threadsafe(run_providers(config), loop).result(timeout_s)
        try:
            yield handle
        finally:
            asyncio.run_coroutine_threadsafe(handle.stop(), loop).result(timeout_s)
    finally:
        asyncio.run_coroutine_threadsafe(_cancel_leftovers(), loop).result(timeout_s)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        if not thread.is_alive():
            loop.close()


async def _cancel_leftovers() -> None:
    """Cancel every task but this one and wait for them, so the loop closes cleanly."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()
