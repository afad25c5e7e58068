"""Garbage for HTTP servers, sent over raw sockets, and what a JSON error boundary answers.

Every case is a whole request as bytes (so nothing a client library would fix or refuse
gets lost on the way) with the status the server must answer. `probe` sends each on a
fresh connection and returns the failures as readable lines, so one assertion shows
every case that went wrong at once. The same cases are fed to the intake, a stage
worker's web port and the local HTTP provider.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

HOST = "127.0.0.1"
#: Output of a process that may not appear however bad the input: a traceback, or
#: aiohttp's own error lines (it logs them when a request fails outside the app).
FORBIDDEN_OUTPUT = ("Traceback", "Error handling request", "Unhandled exception")


@dataclass(frozen=True)
class Answer:
    """A raw HTTP answer: status, content type and body (parsed when JSON)."""

    status: int
    content_type: str
    body: Any


@dataclass(frozen=True)
class Case:
    """One request as bytes and the status it must get."""

    name: str
    request: bytes
    status: int


def request(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """A request with Host and `Connection: close`, and the given headers and body."""
    lines = [method + b" " + target + b" " + version, b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers or []]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def send(port: int, data: bytes, timeout: float = 15.0) -> Answer:
    """Send `data` on a new connection and read the whole answer (the server closes)."""
    with socket.create_connection((HOST, port), timeout=timeout) as conn:
        conn.sendall(data)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
    kind = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            kind = value.strip()
    parsed: Any = body
    if kind.startswith("application/json"):
        parsed = json.loads(body)
    return Answer(status, kind, parsed)


def protocol_cases(get_path: bytes) -> list[Case]:
    """What aiohttp's parser refuses before any application code runs."""
    tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03" * 3
    many = [(b"X-%d" % n, b"v") for n in range(300)]
    return [
        Case("garbage request line", b"HELLO\r\n\r\n", 400),
        Case("TLS handshake on the HTTP port", tls, 400),
        Case("unknown method", request(b"FOO", get_path), 400),
        Case("control byte in the method", request(b"G\x01ET", get_path), 400),
        Case("request line of 20 kB", request(b"GET", b"/" + b"a" * 20_000), 414),
        Case("header of 20 kB", request(b"GET", get_path, [(b"X-Big", b"a" * 20_000)]), 431),
        Case("300 headers", request(b"GET", get_path, many), 431),
        Case("space in a header name", request(b"GET", get_path, [(b"Bad Name", b"v")]), 400),
        Case("invalid UTF-8 in the path", request(b"GET", b"/he\xffalth"), 400),
        Case("NUL in the path", request(b"GET", b"/a\x00b"), 400),
        Case("unknown HTTP version", request(b"GET", get_path, version=b"HTTP/9.9"), 400),
        Case("bare LF line ends", b"GET " + get_path + b" HTTP/1.1\nHost: x\n\n", 400),
        Case("no Host in HTTP/1.1", b"GET " + get_path + b" HTTP/1.1\r\n\r\n", 400),
        Case("raw bytes in the query", request(b"GET", get_path + b"?a=\xff"), 400),
        Case("control byte in a header", request(b"GET", get_path, [(b"X-A", b"\x01")]), 400),
    ]


def routing_cases(get_path: bytes) -> list[Case]:
    """Well-formed requests the application's router refuses."""
    return [
        Case("unknown route", request(b"GET", b"/no/such/route"), 404),
        Case("bad percent-encoding", request(b"GET", b"/no%zz%"), 404),
        Case("percent-encoded invalid UTF-8", request(b"GET", b"/no%ff%fe"), 404),
        Case("wrong method", request(b"DELETE", get_path), 405),
        Case("TRACE", request(b"TRACE", get_path), 405),
        Case("unknown Expect", request(b"GET", get_path, [(b"Expect", b"banana")]), 417),
    ]


def body_cases(post_path: bytes, valid: bytes) -> list[Case]:
    """Bodies for a POST endpoint that cannot be read, or not as what they claim to be."""

    def post(body: bytes, *headers: tuple[bytes, bytes]) -> bytes:
        kind = (b"Content-Type", b"application/json")
        return request(b"POST", post_path, [kind, *headers], body)

    def sized(body: bytes, *headers: tuple[bytes, bytes]) -> bytes:
        return post(body, (b"Content-Length", str(len(body)).encode()), *headers)

    chunked = (b"Transfer-Encoding", b"chunked")
    huge = b'{"n": ' + b"7" * 5000 + b"}"
    cut = gzip.compress(valid)[:12]
    return [
        Case("gzip claimed, plain body", sized(valid, (b"Content-Encoding", b"gzip")), 400),
        Case("deflate claimed, plain body", sized(valid, (b"Content-Encoding", b"deflate")), 400),
        Case("unsupported Content-Encoding", sized(valid, (b"Content-Encoding", b"br")), 415),
        Case("gzip body cut short", sized(cut, (b"Content-Encoding", b"gzip")), 400),
        Case("bad chunk size", post(b"zz\r\nabc\r\n0\r\n\r\n", chunked), 400),
        Case("Content-Length and chunked", sized(b"0\r\n\r\n", chunked), 400),
        Case("non-numeric Content-Length", post(valid, (b"Content-Length", b"abc")), 400),
        Case("negative Content-Length", post(valid, (b"Content-Length", b"-1")), 400),
        Case("two Content-Lengths", sized(valid, (b"Content-Length", b"3")), 400),
        Case("Content-Length overflow", post(valid, (b"Content-Length", b"9" * 30)), 400),
        Case("unknown Transfer-Encoding", post(valid, (b"Transfer-Encoding", b"gzip")), 400),
        Case("integer of 5,000 digits", sized(huge), 400),
        Case("nested 3,000 deep", sized(b"[" * 3000), 400),
    ]


def probe(port: int, cases: list[Case]) -> list[str]:
    """Send every case; one line per case that did not get its status as a JSON error."""
    failures = []
    for case in cases:
        try:
            answer = send(port, case.request)
        except OSError as exc:
            failures.append(f"{case.name}: no answer ({exc})")
            continue
        problem = _problem(case, answer)
        if problem:
            failures.append(f"{case.name}: {problem}")
    return failures


def _problem(case: Case, answer: Answer) -> str | None:
    if answer.status != case.status:
        return f"status {answer.status}, expected {case.status}: {answer.body!r:.200}"
    if not answer.content_type.startswith("application/json"):
        return f"content type {answer.content_type!r}: {answer.body!r:.200}"
    if not isinstance(answer.body, dict) or not isinstance(answer.body.get("error"), str):
        return f"no error message in {answer.body!r:.200}"
    return None


def hang_up_mid_body(port: int, path: bytes, clients: int) -> None:
    """`clients` connections that promise a body, send part of it and disconnect."""
    promise = [(b"Content-Type", b"application/json"), (b"Content-Length", b"500")]
    head = request(b"POST", path, promise)
    conns = []
    for _ in range(clients):
        conn = socket.create_connection((HOST, port), timeout=10)
        conn.sendall(head + b'{"customer_id": ')
        conns.append(conn)
    time.sleep(0.5)  # every request is now in its handler, waiting for the rest
    for conn in conns:
        conn.close()


def clean_output(text: str) -> list[str]:
    """Lines of a process's output that an error boundary must have kept out of it."""
    return [line for line in text.splitlines() if any(bad in line for bad in FORBIDDEN_OUTPUT)]
