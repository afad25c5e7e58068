"""Hand one notification to its provider: email over SMTP, SMS and push over HTTP.

A sender does one thing: deliver a `NotificationRequested` dict once and return the
provider's message id, or raise a `DeliveryError` saying whether to retry. It carries
the notification id to the provider (`Message-ID` and `X-Sluice-Notification-Id` for
mail, `Idempotency-Key` for HTTP) so a provider can drop a retry of something it
already took: a timeout after the provider accepted but before we heard back is the
one case a sender cannot tell apart from a failure.

Connections: an `SmtpSender` keeps one SMTP connection and sends one mail at a time
over it under a lock (reconnecting when the server dropped it), because an SMTP session
is a strict request/reply sequence; parallelism comes from running several senders
(one per agent), not from multiplexing one session. An `HttpSender` keeps one aiohttp
session whose pool reuses keep-alive connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol, runtime_checkable

import aiohttp
import aiosmtplib
from pydantic import SecretStr

from pipelines.delivery.errors import (
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
    for_http_status,
    for_smtp_code,
)
from pipelines.delivery.templates import render

NOTIFICATION_HEADER = "X-Sluice-Notification-Id"
IDEMPOTENCY_HEADER = "Idempotency-Key"

_RECIPIENT_FORMS = {
    "EMAIL": re.compile(r"[^@\s<>(),;:\"\[\]\\]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*"),
    "SMS": re.compile(r"\+[1-9][0-9]{6,14}"),
    "PUSH": re.compile(r"[A-Za-z0-9_:.\-]{8,4096}"),
}
_ID_FORM = re.compile(r"[\x21-\x7e]{1,200}")
_QUEUED_AS = re.compile(r"queued as (\S+)", re.IGNORECASE)


@runtime_checkable
class Sender(Protocol):
    """Delivers notifications of one channel (EMAIL, SMS or PUSH) to one provider."""

    channel: str

    async def send(self, notification: Mapping[str, Any]) -> str:
        """Deliver once; return the provider's message id or raise `DeliveryError`."""
        ...

    async def close(self) -> None:
        """Release connections; the sender may not be used afterwards."""
        ...


def checked_target(notification: Mapping[str, Any], channel: str) -> tuple[str, str]:
    """The notification id and recipient, after checking both are fit to send.

    A notification for another channel, an id that cannot travel in a header, or a
    recipient that is not an address of the channel's kind can never be delivered, so
    they fail permanently here instead of bouncing off the provider on every retry.
    """
    try:
        nid, recipient, got = (
            notification["notification_id"],
            notification["recipient"],
            notification["channel"],
        )
    except KeyError as exc:
        raise PermanentDeliveryError("malformed notification", f"no {exc}") from None
    if got != channel:
        raise PermanentDeliveryError("wrong channel", f"{got} notification for a {channel} sender")
    if not isinstance(nid, str) or not _ID_FORM.fullmatch(nid):
        raise PermanentDeliveryError("invalid notification id", repr(nid)[:80])
    if not isinstance(recipient, str) or not _RECIPIENT_FORMS[channel].fullmatch(recipient):
        raise PermanentDeliveryError("invalid recipient", repr(recipient)[:80])
    return nid, recipient


def message_id(notification_id: str, domain: str) -> str:
    """An RFC 5322 Message-ID that encodes the notification id reversibly.

    Characters outside letters, digits, `-` and `_` become `=XX`, so distinct ids give
    distinct Message-IDs and the id can be read back from the header.
    """
    left = "".join(
        c if c.isascii() and (c.isalnum() or c in "-_") else f"={ord(c):02X}"
        for c in notification_id
    )
    return f"<{left}@{domain}>"


class SmtpSender:
    """Email through an SMTP server, over one connection kept open between mails."""

    channel = "EMAIL"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        from_address: str,
        starttls: bool = False,
        use_tls: bool = False,
        username: str | None = None,
        password: SecretStr | None = None,
        timeout_s: float = 10.0,
        validate_certs: bool = True,
        local_hostname: str = "localhost",
    ) -> None:
        self.from_address = from_address
        self._domain = from_address.rpartition("@")[2] or "sluice.invalid"
        self._smtp = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            use_tls=use_tls,
            start_tls=starttls,
            username=username,
            password=password.get_secret_value() if password else None,
            timeout=timeout_s,
            validate_certs=validate_certs,
            local_hostname=local_hostname,
        )
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """Whether an SMTP session is open (kept between mails, dropped when in doubt)."""
        return self._smtp.is_connected

    async def send(self, notification: Mapping[str, Any]) -> str:
        """Send the rendered mail; the id is the server's queue id, else our Message-ID."""
        message = self.build(notification)
        async with self._lock:
            try:
                if not self._smtp.is_connected:
                    await self._smtp.connect()
                _, reply = await self._smtp.send_message(message)
            except asyncio.CancelledError:
                self._smtp.close()  # cancelled mid-command: the session is out of step
                raise
            except Exception as exc:
                error = mail_refused(exc)
                if error is None:
                    self._smtp.close()  # in doubt: start afresh (aiosmtplib 5 does on timeouts)
                    error = session_failure(exc)
                if error is None:
                    raise
                raise error from exc
        queued = _QUEUED_AS.search(reply)
        return queued.group(1) if queued else str(message["Message-ID"])

    def build(self, notification: Mapping[str, Any]) -> EmailMessage:
        """The mail for `notification`, headers included (public for tests and previews)."""
        nid, recipient = checked_target(notification, self.channel)
        rendered = render(
            str(notification.get("template")), notification.get("params") or {}, "EMAIL"
        )
        message = EmailMessage()
        try:
            message["From"] = self.from_address
            message["To"] = recipient
            message["Subject"] = rendered.subject or ""
            message["Date"] = formatdate(localtime=False, usegmt=True)
            message["Message-ID"] = message_id(nid, self._domain)
            message[NOTIFICATION_HEADER] = nid
        except ValueError as exc:  # e.g. a line break smuggled into the subject via params
            raise PermanentDeliveryError("invalid mail header", str(exc)) from None
        message.set_content(rendered.text)
        return message

    async def close(self) -> None:
        """Say goodbye to the server if still connected, then drop the connection."""
        async with self._lock:
            if self._smtp.is_connected:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                    await self._smtp.quit()
            self._smtp.close()


def mail_refused(exc: Exception) -> DeliveryError | None:
    """The error for a server's refusal of this mail (MAIL, RCPT or DATA), else None.

    These classify by reply code, 4xx retry and 5xx never, and leave the session usable
    (aiosmtplib resets the envelope after them).
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        first = exc.recipients[0] if exc.recipients else None
        return for_smtp_code(first.code if first else -1, first.message if first else "")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused | aiosmtplib.SMTPDataError):
        return for_smtp_code(exc.code, exc.message)
    return None


_SESSION_FAILURES: tuple[tuple[tuple[type[Exception], ...], str, bool], ...] = (
    ((TimeoutError,), "smtp timeout", True),
    (
        (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected),
        "smtp connection failed",
        True,
    ),
    ((aiosmtplib.SMTPNotSupported, ValueError), "smtp unsupported", False),
    ((aiosmtplib.SMTPException, OSError), "smtp error", True),
)


def session_failure(exc: Exception) -> DeliveryError | None:
    """The error for a failure of the SMTP session rather than of this mail, else None.

    Connect, greeting, TLS, login and timeouts are retriable whatever their reply code:
    they say nothing about the mail. Only a mail the server cannot carry at all (an
    address it cannot encode) is permanent.
    """
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return TransientDeliveryError(f"smtp session {exc.code}", exc.message)
    for kinds, reason, retriable in _SESSION_FAILURES:
        if isinstance(exc, kinds):
            kind = TransientDeliveryError if retriable else PermanentDeliveryError
            return kind(reason, str(exc))
    return None


class HttpSender:
    """SMS or push through an HTTP provider: one JSON POST per notification."""

    def __init__(
        self,
        channel: str,
        url: str,
        *,
        timeout_s: float = 5.0,
        auth_header: str | None = None,
        auth_value: SecretStr | None = None,
    ) -> None:
        if channel not in ("SMS", "PUSH"):
            raise ValueError(f"an HTTP sender serves SMS or PUSH, not {channel}")
        self.channel = channel
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._auth = (auth_header, auth_value) if auth_header and auth_value else None
        self._session: aiohttp.ClientSession | None = None

    async def send(self, notification: Mapping[str, Any]) -> str:
        """POST the rendered text; 2xx returns the provider's `id` from the JSON reply."""
        nid, payload = self.payload(notification)
        headers = {IDEMPOTENCY_HEADER: nid}
        if self._auth:
            headers[self._auth[0]] = self._auth[1].get_secret_value()
        try:
            async with self._client().post(self.url, json=payload, headers=headers) as resp:
                body = await resp.text()
                error = for_http_status(resp.status, body[:200], resp.headers.get("Retry-After"))
        except TimeoutError as exc:
            raise TransientDeliveryError("http timeout", str(exc) or self.url) from exc
        except aiohttp.ClientConnectorError as exc:
            raise TransientDeliveryError("http connection failed", str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise TransientDeliveryError("http error", str(exc) or type(exc).__name__) from exc
        if error is not None:
            raise error
        return provider_id(body, nid)

    def payload(self, notification: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The notification id and the JSON body the provider receives."""
        nid, recipient = checked_target(notification, self.channel)
        template = str(notification.get("template"))
        rendered = render(template, notification.get("params") or {}, self.channel)
        return nid, {
            "notification_id": nid,
            "order_id": notification.get("order_id"),
            "channel": self.channel,
            "recipient": recipient,
            "text": rendered.text,
            "template": template,
            "attempt": notification.get("attempt", 1),
        }

    async def close(self) -> None:
        """Close the session and its pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        """The session, made on first use so it belongs to the loop that sends."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session


def provider_id(body: str, notification_id: str) -> str:
    """The provider's message id from a 2xx JSON body (`{"id": ...}`).

    A 2xx without a readable id still means delivered (retrying would send twice), so
    the notification id stands in for it.
    """
    try:
        parsed = json.loads(body)
    except ValueError:
        return notification_id
    if isinstance(parsed, dict) and parsed.get("id") not in (None, ""):
        return str(parsed["id"])
    return notification_id
