"""A stage worker's web port behind the shared error boundary, on a real worker process.

The worker (`sluice worker analytics`, as the other tests start it) serves /health,
/metrics, the analytics pages and Faust's own views through `pipelines.httperrors`;
fed garbage at socket level and bad parameters through a client, it answers each with
a JSON error and the right status, keeps serving, and its output holds no traceback.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pipelines.settings import Settings
from tests.support import httpfuzz, pipeline, processes


def _get(url: str) -> tuple[int, str, Any]:
    """Status, content type and JSON body of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], json.loads(exc.read())


def test_a_stage_workers_web_port_answers_garbage_as_json(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    with pipeline.workers(pipeline_settings, tmp_path) as fleet:
        worker = fleet.start("analytics")
        processes.wait_for(
            lambda: worker.get_json("/health") is not None or not worker.alive(),
            90,
            what="the worker's web server",
        )
        assert worker.alive(), worker.output()[-3000:]
        base = f"http://127.0.0.1:{worker.port}"
        cases = [
            *httpfuzz.protocol_cases(b"/health"),
            *httpfuzz.routing_cases(b"/analytics/windows"),
            httpfuzz.Case(
                "from=abc", httpfuzz.request(b"GET", b"/analytics/windows?from=abc"), 400
            ),
            httpfuzz.Case(
                "Faust's router, no such table", httpfuzz.request(b"GET", b"/router/x/"), 404
            ),
            httpfuzz.Case(
                "to of 5,000 digits",
                httpfuzz.request(b"GET", b"/analytics/windows?to=" + b"9" * 5000),
                400,
            ),
        ]
        started = time.monotonic()
        assert httpfuzz.probe(worker.port, cases) == []
        httpfuzz.hang_up_mid_body(worker.port, b"/analytics/windows", 50)
        status, kind, body = _get(f"{base}/analytics/windows?from=abc")
        assert (status, kind.split(";")[0]) == (400, "application/json"), body
        assert body["error"].startswith("from: "), body
        status, _kind, body = _get(f"{base}/analytics/windows?to=2026-13-45")
        assert status == 400, body
        assert body["error"].startswith("to: "), body
        status, _kind, body = _get(f"{base}/analytics/windows?from=0&to=1")
        assert (status, body["windows"]) == (200, [])
        assert worker.get_json("/health") is not None  # still serving
        print(f"probed in {time.monotonic() - started:.1f}s")
    assert httpfuzz.clean_output(worker.output()) == []
