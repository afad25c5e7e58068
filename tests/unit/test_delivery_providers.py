"""Senders against the local providers over real TCP on 127.0.0.1 (no Kafka needed).

Each test starts its own providers on free ports and stops them on the way out; the
last tests run `sluice providers up` as a child process and stop it with a signal.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from pipelines.delivery import (
    DeliveryError,
    HttpSender,
    PermanentDeliveryError,
    RateLimitedError,
    Sender,
    SmtpSender,
    TransientDeliveryError,
    senders_for,
)
from pipelines.providers import (
    HttpProviderConfig,
    ProvidersConfig,
    ProvidersError,
    ProvidersHandle,
    ReceiptLog,
    SmtpProvider,
    SmtpProviderConfig,
    providers_in_thread,
    run_providers,
)
from tests.support import processes

PARAMS = {"order_id": "ord-9", "total": "39.98 EUR", "customer_id": "cust-9", "reason": "no stock"}
RECIPIENTS = {"EMAIL": "cust-9@example.com", "SMS": "+15550009999", "PUSH": "device-00c0ffee"}

Start = Callable[..., ProvidersHandle]


def note(
    channel: str, nid: str = "", template: str = "order_confirmed", **changes: Any
) -> dict[str, Any]:
    """A NotificationRequested-shaped dict."""
    return {
        "notification_id": nid or f"ord-9:{template}:{channel}",
        "order_id": "ord-9",
        "channel": channel,
        "recipient": RECIPIENTS[channel],
        "template": template,
        "params": PARAMS,
        "attempt": 1,
        "not_before": 0,
        "created_at": 0,
        "last_error": None,
        **changes,
    }


def send_all(sender: Sender, *notifications: dict[str, Any]) -> list[str | DeliveryError]:
    """Send each notification in turn on one sender (then close it); errors are returned."""

    async def scenario() -> list[str | DeliveryError]:
        results: list[str | DeliveryError] = []
        try:
            for notification in notifications:
                try:
                    results.append(await sender.send(notification))
                except DeliveryError as exc:
                    results.append(exc)
        finally:
            await sender.close()
        return results

    return asyncio.run(scenario())


def smtp_sender(handle: ProvidersHandle, timeout_s: float = 5.0) -> SmtpSender:
    return SmtpSender(
        handle.smtp_host,
        handle.smtp_port,
        from_address="orders@sluice.example",
        timeout_s=timeout_s,
    )


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def start() -> Iterator[Start]:
    """Start providers on free ports with the given config; all stopped after the test."""
    with ExitStack() as stack:

        def make(**config: Any) -> ProvidersHandle:
            full = ProvidersConfig(smtp_port=0, http_port=0, **config)
            return stack.enter_context(providers_in_thread(full))

        yield make


def test_smtp_delivers_rendered_mail_with_the_notification_id(start: Start) -> None:
    handle = start()
    sender = smtp_sender(handle)
    first, second = send_all(sender, note("EMAIL"), note("EMAIL", template="order_rejected"))
    receipts = handle.receipts.receipts()
    assert [r.provider_id for r in receipts] == [first, second]
    mail = receipts[0]
    assert mail.notification_id == "ord-9:order_confirmed:EMAIL"
    assert mail.recipient == "cust-9@example.com"
    assert mail.subject == "Your order ord-9 is confirmed"
    assert "taken payment of 39.98 EUR" in mail.body
    assert "Reason: no stock" in receipts[1].body
    assert handle.receipts.count("ord-9:order_confirmed:EMAIL") == 1


def test_smtp_451_is_transient_and_nothing_is_recorded(start: Start) -> None:
    handle = start(smtp=SmtpProviderConfig(failure_rate=1.0))
    [result] = send_all(smtp_sender(handle), note("EMAIL"))
    assert isinstance(result, TransientDeliveryError)
    assert result.reason == "smtp 451"
    assert len(handle.receipts) == 0
    assert handle.receipts.failures() == {"EMAIL:451": 1}


def test_smtp_550_bad_recipient_is_permanent_and_the_session_goes_on(start: Start) -> None:
    handle = start(smtp=SmtpProviderConfig(reject_recipients=re.compile(r"^bounce@")))
    bad = note("EMAIL", nid="n-bad", recipient="bounce@example.com")
    rejected, delivered = send_all(smtp_sender(handle), bad, note("EMAIL", nid="n-good"))
    assert isinstance(rejected, PermanentDeliveryError)
    assert rejected.reason == "smtp 550"
    assert not rejected.retriable
    assert isinstance(delivered, str)
    assert handle.receipts.count("n-bad") == 0
    assert handle.receipts.count("n-good") == 1


def test_smtp_slow_server_times_out_as_transient(start: Start) -> None:
    handle = start(smtp=SmtpProviderConfig(latency_ms=1_000))
    [result] = send_all(smtp_sender(handle, timeout_s=0.2), note("EMAIL"))
    assert isinstance(result, TransientDeliveryError)
    assert result.reason == "smtp timeout"


def test_smtp_timeout_drops_the_session_so_a_late_reply_cannot_answer_the_next_mail() -> None:
    """After a timeout the server's reply may still arrive; on a kept session it would be
    read as the answer to the next command, so the sender must start a new session."""

    async def scenario() -> tuple[bool, bool, object, int]:
        server = SmtpProvider(SmtpProviderConfig(latency_ms=400))
        port = await server.start(0)
        sender = SmtpSender("127.0.0.1", port, from_address="o@sluice.example", timeout_s=0.2)
        try:
            with pytest.raises(TransientDeliveryError, match="smtp timeout"):
                await sender.send(note("EMAIL", nid="n-slow"))
            after_timeout = sender.connected
            await asyncio.sleep(0.5)  # the slow reply would have arrived by now
            try:
                outcome: object = await sender.send(note("EMAIL", nid="n-next"))
            except DeliveryError as exc:
                outcome = exc
            return after_timeout, sender.connected, outcome, server.sessions_opened
        finally:
            await sender.close()
            await server.stop()

    after_timeout, _, outcome, sessions = asyncio.run(scenario())
    assert after_timeout is False
    assert isinstance(outcome, TransientDeliveryError)  # the server is still slow: a timeout,
    assert outcome.reason == "smtp timeout"  # not a stale "250" mistaken for success
    assert sessions == 2


def test_smtp_send_cancelled_mid_mail_drops_the_session() -> None:
    async def scenario() -> tuple[bool, int, int]:
        server = SmtpProvider(SmtpProviderConfig(latency_ms=300))
        port = await server.start(0)
        sender = SmtpSender("127.0.0.1", port, from_address="o@sluice.example")
        try:
            task = asyncio.create_task(sender.send(note("EMAIL", nid="n-cancel")))
            await asyncio.sleep(0.1)  # in DATA, waiting for the slow reply
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            dropped = not sender.connected
            await sender.send(note("EMAIL", nid="n-after"))  # a fresh session, in step
            return dropped, server.log.count("n-after"), server.sessions_opened
        finally:
            await sender.close()
            await server.stop()

    dropped, after, sessions = asyncio.run(scenario())
    assert dropped
    assert after == 1
    assert sessions == 2


def test_smtp_sender_keeps_one_connection_and_reconnects_after_a_drop() -> None:
    """Two mails share a session; after the server restarts, the sender reconnects;
    while it is down, sending fails as transient (connection refused)."""

    async def scenario() -> tuple[list[object], ReceiptLog]:
        log = ReceiptLog()
        server = SmtpProvider(log=log)
        port = await server.start(0)
        sender = SmtpSender("127.0.0.1", port, from_address="orders@sluice.example")
        outcomes: list[object] = []
        try:
            outcomes.append(await sender.send(note("EMAIL", nid="n1")))
            outcomes.append(await sender.send(note("EMAIL", nid="n2")))
            assert sender.connected
            outcomes.append(server.sessions_opened)  # one session for both mails
            await server.stop()
            try:
                await sender.send(note("EMAIL", nid="n3"))
            except DeliveryError as exc:
                outcomes.append(exc)
            server = SmtpProvider(log=log)
            await server.start(port)
            outcomes.append(await sender.send(note("EMAIL", nid="n4")))
        finally:
            await sender.close()
            await server.stop()
        return outcomes, log

    outcomes, log = asyncio.run(scenario())
    assert outcomes[2] == 1
    down = outcomes[3]
    assert isinstance(down, TransientDeliveryError)
    assert down.reason == "smtp connection failed"
    assert isinstance(outcomes[4], str)
    assert [r.notification_id for r in log.receipts()] == ["n1", "n2", "n4"]


def test_http_delivers_sms_and_push_and_returns_the_provider_id(start: Start) -> None:
    handle = start()
    settings = handle.delivery_settings()
    senders = senders_for(settings)
    [sms_id] = send_all(senders["SMS"], note("SMS"))
    [push_id] = send_all(senders["PUSH"], note("PUSH"))
    send_all(senders["EMAIL"])  # nothing to send; closes it
    sms, push = handle.receipts.receipts()
    assert (sms.provider_id, push.provider_id) == (sms_id, push_id)
    assert sms.channel == "SMS"
    assert sms.recipient == "+15550009999"
    assert sms.body == "Order ord-9 confirmed, total 39.98 EUR. Thank you!"
    assert push.notification_id == "ord-9:order_confirmed:PUSH"
    assert get_json(f"{handle.http_url}/health") == {"status": "ok"}


def test_http_500_is_transient_and_not_recorded(start: Start) -> None:
    handle = start(http=HttpProviderConfig(failure_rate=1.0))
    [result] = send_all(HttpSender("SMS", handle.sms_url), note("SMS"))
    assert isinstance(result, TransientDeliveryError)
    assert not isinstance(result, RateLimitedError)
    assert result.reason == "http 500"
    assert len(handle.receipts) == 0


def test_http_429_carries_the_configured_retry_after(start: Start) -> None:
    handle = start(http=HttpProviderConfig(rate_limit_every=1, retry_after_s=7))
    [result] = send_all(HttpSender("PUSH", handle.push_url), note("PUSH"))
    assert isinstance(result, RateLimitedError)
    assert result.retriable
    assert result.retry_after_s == 7.0


def test_http_429_retry_after_as_an_http_date(start: Start) -> None:
    config = HttpProviderConfig(rate_limit_every=1, retry_after_s=30, retry_after_as_date=True)
    handle = start(http=config)
    [result] = send_all(HttpSender("SMS", handle.sms_url), note("SMS"))
    assert isinstance(result, RateLimitedError)
    assert result.retry_after_s is not None
    assert 28 <= result.retry_after_s <= 31  # HTTP-dates have whole seconds


def test_http_hang_with_a_short_client_timeout_is_transient(start: Start) -> None:
    handle = start(http=HttpProviderConfig(timeout_rate=1.0))
    [result] = send_all(HttpSender("SMS", handle.sms_url, timeout_s=0.3), note("SMS"))
    assert isinstance(result, TransientDeliveryError)
    assert result.reason == "http timeout"
    assert len(handle.receipts) == 0


def test_http_400_is_permanent(start: Start) -> None:
    handle = start(http=HttpProviderConfig(bad_request_recipients=re.compile(r"0009999$")))
    [result] = send_all(HttpSender("SMS", handle.sms_url), note("SMS"))
    assert isinstance(result, PermanentDeliveryError)
    assert result.reason == "http 400"
    assert len(handle.receipts) == 0


def test_http_auth_header_is_sent_and_checked(start: Start) -> None:
    handle = start(http=HttpProviderConfig(auth=("X-Api-Key", "k-123")))
    good = HttpSender("SMS", handle.sms_url, auth_header="X-Api-Key", auth_value=SecretStr("k-123"))
    [ok] = send_all(good, note("SMS", nid="n-auth"))
    [refused] = send_all(HttpSender("SMS", handle.sms_url), note("SMS", nid="n-anon"))
    assert isinstance(ok, str)
    assert isinstance(refused, PermanentDeliveryError)
    assert refused.reason == "http 401"
    assert [r.notification_id for r in handle.receipts.receipts()] == ["n-auth"]


def test_a_failed_request_is_not_a_receipt_and_its_retry_counts_once(start: Start) -> None:
    handle = start(http=HttpProviderConfig(rate_limit_every=2))
    sender = HttpSender("SMS", handle.sms_url)
    first, limited, retried = send_all(
        sender, note("SMS", nid="n-a"), note("SMS", nid="n-b"), note("SMS", nid="n-b")
    )
    assert isinstance(first, str)
    assert isinstance(limited, RateLimitedError)
    assert isinstance(retried, str)
    assert handle.receipts.count("n-a") == 1
    assert handle.receipts.count("n-b") == 1
    stats = get_json(f"{handle.http_url}/stats")
    assert stats["received"] == 2
    assert stats["duplicates"] == 0
    assert stats["failures_injected"] == {"SMS:429": 1}


def test_http_connection_refused_is_transient() -> None:
    sender = HttpSender("SMS", f"http://127.0.0.1:{free_port()}/sms", timeout_s=2)
    [result] = send_all(sender, note("SMS"))
    assert isinstance(result, TransientDeliveryError)
    assert result.reason == "http connection failed"


def test_seeded_failures_repeat(start: Start) -> None:
    def outcomes(seed: int) -> list[bool]:
        handle = start(http=HttpProviderConfig(failure_rate=0.5), seed=seed)
        sender = HttpSender("SMS", handle.sms_url)
        results = send_all(sender, *(note("SMS", nid=f"n{i}") for i in range(20)))
        return [isinstance(r, str) for r in results]

    first = outcomes(11)
    assert first == outcomes(11)
    assert 0 < sum(first) < 20


def test_run_providers_in_the_callers_loop() -> None:
    async def scenario() -> list[str | DeliveryError]:
        handle = await run_providers(ProvidersConfig(smtp_port=0, http_port=0))
        senders = senders_for(handle.delivery_settings())
        try:
            return [await senders[ch].send(note(ch)) for ch in ("EMAIL", "SMS", "PUSH")]
        finally:
            for sender in senders.values():
                await sender.close()
            await handle.stop()

    assert all(isinstance(r, str) for r in asyncio.run(scenario()))


def test_a_taken_port_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = ProvidersConfig(smtp_port=0, http_port=port)
        with (
            pytest.raises(ProvidersError, match=f"cannot listen on 127.0.0.1:{port}"),
            providers_in_thread(config),
        ):
            pass


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_providers_up_serves_and_exits_0_on_a_signal(
    stop_signal: signal.Signals, tmp_path: Path
) -> None:
    record = tmp_path / "receipts.jsonl"
    cmd = processes.python(
        "-m",
        "pipelines.cli",
        "providers",
        "up",
        "--smtp-port",
        "0",
        "--http-port",
        "0",
        "--record",
        str(record),
    )
    child = processes.start(cmd, tmp_path / "providers.log", name="providers up")
    try:
        processes.wait_for(
            lambda: "HTTP provider:" in child.output() or not child.alive(), 30, what="startup"
        )
        out = child.output()
        smtp = re.search(r"SMTP provider: 127\.0\.0\.1:(\d+)", out)
        http = re.search(r"HTTP provider: (http://127\.0\.0\.1:\d+)", out)
        assert smtp, out
        assert http, out
        assert get_json(f"{http.group(1)}/health") == {"status": "ok"}
        sender = SmtpSender("127.0.0.1", int(smtp.group(1)), from_address="o@sluice.example")
        assert isinstance(send_all(sender, note("EMAIL"))[0], str)
        assert isinstance(send_all(HttpSender("SMS", f"{http.group(1)}/sms"), note("SMS"))[0], str)
        child.proc.send_signal(stop_signal)
        code = child.proc.wait(timeout=15)
    finally:
        child.stop()
    assert code == 0, child.output()
    assert "providers stopped: received 2 (email 1, sms 1, push 0)" in child.output()
    assert "Traceback" not in child.output()
    lines = record.read_text().splitlines()
    assert sorted(json.loads(line)["channel"] for line in lines) == ["EMAIL", "SMS"]
