"""The shared HTTP error boundary, broker-free: every failure is a JSON answer, logged quietly.

The intake app (with a fake producer), the local HTTP provider and a Faust app's web
pages are each served in-process through `BoundaryRunner` on a real loopback socket and
fed garbage at socket level; the log must hold nothing above debug level for any of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faust
import pytest
from aiohttp import web

from pipelines import httperrors
from pipelines.httperrors import BoundaryRunner, HttpProblem
from pipelines.providers.http import HttpProvider
from pipelines.runtime.analytics_web import WindowView, install_views
from pipelines.runtime.faustapp import StageMetrics, install_web
from pipelines.settings import Settings
from producers.intake import IntakeConfig, create_app
from tests.support import httpfuzz, processes
from tests.unit.test_intake_service import BODY, FakePublisher

VALID = json.dumps(BODY).encode()
UNBOUND = 65000  # a Faust app's web port, never bound here: `served` listens instead


@contextmanager
def served(make: Callable[[], web.Application]) -> Iterator[int]:
    """`make()` served through the boundary on a loopback port, on a thread of its own."""
    loop = asyncio.new_event_loop()
    ready: list[BoundaryRunner] = []

    async def start() -> int:
        runner = BoundaryRunner(make(), access_log=None, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        ready.append(runner)
        return int(runner.addresses[0][1])

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    finally:
        if ready:
            asyncio.run_coroutine_threadsafe(ready[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def intake_app(publisher: FakePublisher) -> web.Application:
    return create_app(
        Settings(bootstrap_servers="127.0.0.1:1"),
        IntakeConfig(max_body_bytes=200_000),
        publisher=lambda: publisher,
        background=False,
    )


def loud(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records above debug level, and any record that carries a traceback above it."""
    return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records if r.levelno > 10]


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return {
        ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
        for ln in lines
        if ln.startswith("sluice_intake_") and not ln.startswith("#")
    }


def test_the_intake_answers_every_garbage_request_as_json_and_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    publisher = FakePublisher()
    cases = [
        *httpfuzz.protocol_cases(b"/health"),
        *httpfuzz.routing_cases(b"/health"),
        *httpfuzz.body_cases(b"/orders", VALID),
    ]
    with served(lambda: intake_app(publisher)) as port:
        assert httpfuzz.probe(port, cases) == []
        httpfuzz.hang_up_mid_body(port, b"/orders", 50)
        counts = metrics(port)
    assert publisher.sent == []
    assert loud(caplog) == []
    assert not [k for k in counts if 'status="5' in k], counts
    assert counts["sluice_intake_client_disconnects_total"] == 50
    assert counts['sluice_intake_requests_total{route="/orders",status="400"}'] > 0


def test_the_http_provider_answers_garbage_as_json(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    provider = HttpProvider()
    cases = [
        *httpfuzz.protocol_cases(b"/health"),
        *httpfuzz.routing_cases(b"/health"),
        *httpfuzz.body_cases(b"/sms", b'{"notification_id": "n", "recipient": "r", "text": "t"}'),
    ]
    with served(provider.app) as port:
        assert httpfuzz.probe(port, cases) == []
        bogus = httpfuzz.request(
            b"POST",
            b"/sms",
            [(b"Content-Type", b"application/json; charset=bogus"), (b"Content-Length", b"2")],
            b"{}",
        )
        answer = httpfuzz.send(port, bogus)
        assert (answer.status, answer.body["error"]) == (400, "notification_id is required")
        httpfuzz.hang_up_mid_body(port, b"/sms", 20)
    assert provider.log.receipts() == []
    assert loud(caplog) == []


def faust_web(settings: Settings) -> web.Application:
    """A Faust app's aiohttp application with the stage pages, as a worker would serve it."""
    app = faust.App("boundary-test", broker="kafka://127.0.0.1:1", web_port=UNBOUND)
    install_web(app, StageMetrics("test"))
    install_views(app, settings, WindowView(settings), {})
    driver: Any = app.web
    assert isinstance(driver._runner, BoundaryRunner)  # what the worker will start
    driver.init_server()
    return driver.web_app  # type: ignore[no-any-return]


def test_a_faust_apps_pages_answer_garbage_and_bad_parameters_as_json(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(bootstrap_servers="127.0.0.1:1")
    bad_times = [
        httpfuzz.Case(f"{name}={value!r}", httpfuzz.request(b"GET", target), 400)
        for name, value, target in [
            ("from", "abc", b"/analytics/windows?from=abc"),
            ("to", "%zz", b"/analytics/windows?to=%zz"),
            ("from", "digits", b"/analytics/windows?from=" + b"9" * 5000),
            ("from", "superscript", b"/analytics/windows?from=%C2%B2"),
            ("to", "year 99999", b"/analytics/windows?to=99999-01-01"),
        ]
    ]
    no_table = [
        httpfuzz.Case(f"Faust's {path!r}", httpfuzz.request(b"GET", path), 404)
        for path in (b"/router/nope/", b"/router/nope/key/", b"/table/nope/")
    ]
    cases = [
        *httpfuzz.protocol_cases(b"/analytics/windows"),
        *httpfuzz.routing_cases(b"/analytics/windows"),
        *bad_times,
        *no_table,
    ]
    with served(lambda: faust_web(settings)) as port:
        assert httpfuzz.probe(port, cases) == []
        answer = httpfuzz.send(port, httpfuzz.request(b"GET", b"/analytics/windows?from=abc"))
        assert answer.body["error"].startswith("from: ")
        good = httpfuzz.send(port, httpfuzz.request(b"GET", b"/analytics/windows?from=0&to=1"))
        assert (good.status, good.body["windows"]) == (200, [])
    assert loud(caplog) == []


def test_answer_keeps_statuses_and_logs_a_bug_as_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pipelines.httperrors")

    failures: dict[str, Exception] = {
        "problem": HttpProblem(409, "taken", ["id: taken"], {"X-A": "1"}),
        "timeout": TimeoutError(),
        "bug": KeyError("secret-internal-name"),
    }

    async def boom(request: web.Request) -> web.Response:
        raise failures[request.match_info["kind"]]

    def make() -> web.Application:
        app = web.Application()
        app.router.add_get("/{kind}", boom)
        return app

    with served(make) as port:
        problem = httpfuzz.send(port, httpfuzz.request(b"GET", b"/problem"))
        timeout = httpfuzz.send(port, httpfuzz.request(b"GET", b"/timeout"))
        bug = httpfuzz.send(port, httpfuzz.request(b"GET", b"/bug"))
    assert (problem.status, problem.body) == (409, {"error": "taken", "problems": ["id: taken"]})
    assert timeout.status == 503
    assert bug.status == 500
    assert "secret-internal-name" not in json.dumps(bug.body)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is None  # one line; the traceback is the debug record's
    assert "KeyError" in errors[0].getMessage()
    assert any(r.exc_info and r.levelno == logging.DEBUG for r in caplog.records)


def test_install_faust_is_idempotent() -> None:
    app = faust.App("boundary-twice", broker="kafka://127.0.0.1:1", web_port=UNBOUND)
    httperrors.install_faust(app)
    runner = app.web._runner  # type: ignore[attr-defined]
    httperrors.install_faust(app)
    assert app.web._runner is runner  # type: ignore[attr-defined]
    assert isinstance(runner, BoundaryRunner)


def test_the_providers_process_answers_garbage_as_json_and_prints_no_traceback(
    tmp_path: Path,
) -> None:
    """`sluice providers up` as a process (no broker needed): its HTTP port fed garbage."""
    cmd = processes.python(
        "-m", "pipelines.cli", "providers", "up", "--smtp-port", "0", "--http-port", "0"
    )
    child = processes.start(cmd, tmp_path / "providers.log", name="providers up")
    try:
        processes.wait_for(
            lambda: "HTTP provider:" in child.output() or not child.alive(), 30, what="startup"
        )
        found = re.search(r"HTTP provider: http://127\.0\.0\.1:(\d+)", child.output())
        assert found, child.output()
        port = int(found.group(1))
        cases = [
            *httpfuzz.protocol_cases(b"/health"),
            *httpfuzz.routing_cases(b"/stats"),
            *httpfuzz.body_cases(b"/push", b'{"notification_id": "n", "recipient": "r"}'),
        ]
        assert httpfuzz.probe(port, cases) == []
        httpfuzz.hang_up_mid_body(port, b"/sms", 50)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/sms",
            data=b'{"n": ' + b"1" * 5000 + b"}",
            headers={"Content-Type": "application/json", "Content-Encoding": "identity"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400
        assert "notification_id" in json.loads(refused.value.read())["error"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as stats:
            assert json.loads(stats.read())["received"] == 0
        child.proc.send_signal(signal.SIGTERM)
        assert child.proc.wait(timeout=15) == 0
    finally:
        child.stop()
    assert httpfuzz.clean_output(child.output()) == []
