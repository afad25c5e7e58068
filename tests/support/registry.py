"""A minimal Confluent-compatible schema registry over real HTTP, for tests.

No schema registry can run on machines without a container engine; this serves the
handful of REST calls the confluent-kafka client makes (register, fetch by id) so the
Confluent-framing path is exercised through the client's real HTTP code.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _State:
    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.lock = threading.Lock()

    def register(self, subject: str, schema: str) -> int:
        with self.lock:
            schema_id = self.ids.setdefault(schema, len(self.ids) + 1)
            self.schemas[schema_id] = schema
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            path = self.path.split("?")[0]
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"] or 0)) or b"{}")
            match = re.fullmatch(r"/subjects/([^/]+)/versions", path)
            if match:
                self._send(200, {"id": state.register(match[1], body["schema"])})
                return
            self._send(404, {"error_code": 40401, "message": f"no route {path}"})

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            match = re.fullmatch(r"/schemas/ids/(\d+)", path)
            if match and int(match[1]) in state.schemas:
                self._send(200, {"schema": state.schemas[int(match[1])]})
                return
            self._send(404, {"error_code": 40403, "message": "Schema not found"})

    return Handler


class Registry:
    """A registry that can be stopped and started again on the same port, keeping its
    schemas (as a real one keeps them in its `_schemas` topic): for outage tests."""

    def __init__(self) -> None:
        self.state = _State()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self.state))
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop answering: connections to the port are refused until `start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


@contextmanager
def schema_registry() -> Iterator[str]:
    """Serve a registry on a free loopback port; yields its URL."""
    with running_registry() as registry:
        yield registry.url


@contextmanager
def running_registry() -> Iterator[Registry]:
    """A `Registry` started on a free loopback port, stopped at the end."""
    registry = Registry()
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()
