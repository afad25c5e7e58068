"""A real SMTP server on 127.0.0.1 that records mail and fails on request.

It speaks SMTP through aiosmtpd's protocol on a plain asyncio server (so port 0 picks a
free port and the server lives in the caller's event loop). Every accepted mail becomes
a receipt keyed by its `X-Sluice-Notification-Id` header. Failures are injected before
anything is recorded, so a refused mail never counts as received: `reject_recipients`
refuses matching addresses at RCPT with 550, `failure_rate` answers DATA with 451 at
random (seeded), and `latency_ms` delays the final reply.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import random
import re
import weakref
from email.message import EmailMessage

from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import BaseModel, ConfigDict, Field

from pipelines.delivery.senders import NOTIFICATION_HEADER
from pipelines.providers.receipts import Receipt, ReceiptLog, now_ms

HOST = "127.0.0.1"


class SmtpProviderConfig(BaseModel):
    """How the local SMTP server misbehaves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_rate: float = Field(0.0, ge=0.0, le=1.0, description="Share of mails answered 451.")
    latency_ms: int = Field(0, ge=0, description="Delay before the reply to DATA.")
    reject_recipients: re.Pattern[str] | None = Field(
        None, description="Recipients matching this regex are refused with 550."
    )


class _Handler:
    """aiosmtpd hooks: refuse, delay or fail as configured, else record the mail."""

    def __init__(self, config: SmtpProviderConfig, log: ReceiptLog, rng: random.Random) -> None:
        self.config = config
        self.log = log
        self.rng = rng

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        pattern = self.config.reject_recipients
        if pattern is not None and pattern.search(address):
            self.log.failed("EMAIL", "550")
            return f"550 5.1.1 <{address}>: recipient rejected"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fail = self.rng.random() < self.config.failure_rate
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)
        if fail:
            self.log.failed("EMAIL", "451")
            return "451 4.3.0 temporary failure (injected), try again later"
        message = _parse(envelope)
        provider_id = self.log.next_provider_id("mail")
        for recipient in envelope.rcpt_tos:
            self.log.record(_receipt(message, recipient, provider_id))
        return f"250 2.0.0 OK queued as {provider_id}"


def _parse(envelope: Envelope) -> EmailMessage:
    raw = envelope.original_content or envelope.content or b""
    data = raw if isinstance(raw, bytes) else raw.encode()
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)  # policy.default always builds EmailMessage
    return parsed


def _receipt(message: EmailMessage, recipient: str, provider_id: str) -> Receipt:
    body_part = message.get_body(("plain",))
    body = body_part.get_content() if isinstance(body_part, EmailMessage) else ""
    nid = message.get(NOTIFICATION_HEADER) or message.get("Message-ID") or ""
    subject = message.get("Subject")
    return Receipt(
        notification_id=str(nid),
        channel="EMAIL",
        recipient=recipient,
        subject=str(subject) if subject is not None else None,
        body=str(body).replace("\r\n", "\n"),
        received_at_ms=now_ms(),
        provider_id=provider_id,
    )


class SmtpProvider:
    """The server: `await start()`, use `port`, `await stop()`."""

    def __init__(
        self,
        config: SmtpProviderConfig | None = None,
        log: ReceiptLog | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        self.config = config or SmtpProviderConfig()
        self.log = log if log is not None else ReceiptLog()
        self._handler = _Handler(self.config, self.log, random.Random(seed))
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        #: SMTP sessions (TCP connections) accepted so far, for tests of connection reuse.
        self.sessions_opened = 0

    @property
    def port(self) -> int:
        """The port the server listens on (the real one when started with 0)."""
        if self._server is None:
            raise RuntimeError("the SMTP provider is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, port: int = 0) -> int:
        """Listen on 127.0.0.1:`port` (0 for any free port); return the port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._session, HOST, port)
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop open sessions (clients see the connection close)."""
        if self._server is None:
            return
        self._server.close()
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        await self._server.wait_closed()
        self._server = None

    def _session(self) -> SMTP:
        session = SMTP(
            self._handler,
            hostname="sluice-smtp.localhost",
            ident="Sluice local SMTP provider",
            loop=asyncio.get_running_loop(),
        )
        self._sessions.add(session)
        self.sessions_opened += 1
        return session
