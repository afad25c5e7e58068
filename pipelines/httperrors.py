"""The error boundary of every HTTP server Sluice runs: every failure is one JSON answer.

The intake, the local HTTP provider and the stage workers' web pages (Faust's web server
is aiohttp too) are all served through `BoundaryRunner`, an `AppRunner` that guards the
application at the two places where aiohttp would otherwise answer on its own:

- around the whole application (routing, `Expect` handling, middlewares, views): any
  exception becomes `{"error": ...}` with the status it deserves (`answer`);
- in the connection handler, for what fails before the application runs at all (a
  malformed request line, an oversized header, bad chunking, an unsupported
  Content-Encoding): aiohttp's `RequestHandler.handle_error` answers those in plain
  text, so the runner's server makes `JsonRequestHandler`s instead.

Client faults (bad input, a client that hangs up mid-request) are logged at debug level
only; a bug in Sluice is one error line, with its traceback at debug level. A client
that went away gets no answer and no error: `client_gone` tells the two apart, so a
server can count disconnects rather than 500s.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from pipelines.errors import SluiceError, explain

log = logging.getLogger(__name__)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

#: Headers of an aiohttp HTTPException that still mean something on a JSON answer.
KEPT_HEADERS = ("Allow", "Location", "Retry-After", "WWW-Authenticate")
#: The longest request line accepted (aiohttp's default for header fields is 8190):
#: the two limits differ so that a too-long line can be told from a too-long header.
MAX_REQUEST_LINE = 8192
MAX_ERROR_CHARS = 300


class HttpProblem(SluiceError):
    """A request answered with an error status: the message, every problem, extra headers."""

    def __init__(
        self,
        status: int,
        error: str,
        problems: list[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.problems = list(problems or [])
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON error document: always `error`, and `problems` when there are some."""
        out: dict[str, Any] = {"error": self.error}
        if self.problems:
            out["problems"] = self.problems
        return out


def json_error(status: int, error: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """`{"error": error}` with `status`."""
    return web.json_response({"error": error}, status=status, headers=headers)


def answer(request: web.BaseRequest, exc: BaseException) -> web.Response:
    """The JSON answer to a request that raised `exc`, logged as it deserves.

    Sluice's own `HttpProblem`s and aiohttp's HTTP exceptions keep their status; a body
    aiohttp could not read (bad chunking, a body that does not decode as its
    Content-Encoding says) is the client's 400; a timeout is a 503 worth retrying;
    anything else is a bug: a 500, one error line, the traceback at debug level.
    """
    if isinstance(exc, HttpProblem):
        log.debug("%s %s: %d %s", request.method, request.path, exc.status, exc.error)
        return web.json_response(exc.body(), status=exc.status, headers=exc.headers)
    if isinstance(exc, web.HTTPException):
        log.debug("%s %s: %d %s", request.method, request.path, exc.status, exc.reason)
        kept = {k: v for k, v in exc.headers.items() if k in KEPT_HEADERS}
        return json_error(exc.status, _http_exception_text(request, exc), kept)
    if isinstance(exc, (RequestPayloadError, HttpProcessingError)):
        log.debug("%s %s: unreadable body", request.method, request.path, exc_info=exc)
        unreadable = json_error(400, _body_problem(exc))
        unreadable.force_close()  # the rest of the body cannot be framed: no reuse
        return unreadable
    if isinstance(exc, TimeoutError):
        log.warning("%s %s timed out", request.method, request.path)
        log.debug("the timeout", exc_info=exc)
        return json_error(503, "timed out; retry shortly", {"Retry-After": "1"})
    log.error("%s %s failed: %s", request.method, request.path, one_line(exc))
    log.debug("the failure", exc_info=exc)
    return json_error(500, "internal error; the server's log says more")


def one_line(exc: BaseException) -> str:
    """What failed, in one line for the log (`explain`'s, without its CLI advice)."""
    if isinstance(exc, SluiceError):
        return explain(exc)[0]
    detail = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {detail[0]}" if detail else type(exc).__name__
    return f"{text[:MAX_ERROR_CHARS]} (the traceback is logged at debug level)"


def client_gone(request: web.BaseRequest, exc: BaseException) -> bool:
    """True when `exc` only says the client hung up: nobody is left to answer."""
    if not isinstance(exc, ConnectionError):
        return False
    transport = request.transport
    return transport is None or transport.is_closing()


def guard(handler: Handler) -> Handler:
    """`handler` with every exception turned into its JSON answer (see `answer`).

    A client that went away is left to aiohttp, which drops the connection quietly;
    a redirect or other non-error HTTPException stays aiohttp's to send.
    """

    async def guarded(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return answer(request, exc)
        except Exception as exc:
            if client_gone(request, exc):
                log.debug("%s %s: client gone", request.method, request.path, exc_info=exc)
                raise  # nobody to answer: aiohttp drops the connection quietly
            if request.writer.output_size > 0:  # half an answer is out: only a bug does that
                where = f"{request.method} {request.path}"
                log.error("%s failed mid-answer: %s", where, one_line(exc))
                log.debug("the failure", exc_info=exc)
                raise
            return answer(request, exc)

    return guarded


class JsonRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering protocol errors as JSON and logging quietly.

    `handle_error` answers what fails before the application runs (the parser's errors)
    and what escapes it (only a client gone, behind `guard`); `log_exception` is where
    aiohttp reports a failure after an answer (e.g. a body that stops decoding while it
    is drained): a client's fault is logged at debug level, anything else as one line.
    """

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        log.debug("protocol error from %s: %d", request.remote, status, exc_info=exc)
        if request.writer.output_size > 0:  # as aiohttp: half an answer is already out
            raise ConnectionError("the answer had begun; no error can be sent")
        response = protocol_answer(status, exc, max_line=self.max_line_size)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        client_fault = (ConnectionError, HttpProcessingError, RequestPayloadError)
        if isinstance(exc, client_fault):
            log.debug(*args, **kw)
            return
        detail = one_line(exc) if isinstance(exc, BaseException) else "no detail"
        log.error("HTTP server: %s: %s", args[0] if args else "error", detail)
        log.debug("the failure", exc_info=exc)


def protocol_answer(status: int, exc: BaseException | None, *, max_line: int) -> web.Response:
    """The JSON answer to a request aiohttp's parser refused (its status: 400, or 504/500)."""
    if isinstance(exc, HttpProcessingError):
        return json_error(*_parser_problem(exc, max_line))
    if status >= 500:
        return json_error(503, "the server could not answer; retry shortly", {"Retry-After": "1"})
    return json_error(status, "malformed HTTP request")


def _parser_problem(exc: HttpProcessingError, max_line: int) -> tuple[int, str]:
    """Status and message for a parser error: 414/431 for sizes, 415 for a coding, else 4xx."""
    text = _first_line(exc.message)
    if isinstance(exc, LineTooLong):
        if exc.args[1:2] == (max_line,):
            return 414, f"the request line is longer than {max_line} bytes"
        return 431, f"a header field is longer than {exc.args[1]} bytes"
    if isinstance(exc, ContentEncodingError):
        return 415, "the Content-Encoding is not supported; send identity, gzip or deflate"
    if text.startswith("Too many headers"):
        return 431, "too many header fields"
    return (exc.code if 400 <= exc.code < 500 else 400), f"malformed HTTP request: {text}"


class JsonServer(web.Server):
    """aiohttp's low-level server, making `JsonRequestHandler`s for its connections."""

    def __call__(self) -> RequestHandler:
        options = {"max_line_size": MAX_REQUEST_LINE, **self._kwargs}
        return JsonRequestHandler(self, loop=self._loop, **options)


class BoundaryRunner(web.AppRunner):
    """An AppRunner whose server answers every failure as JSON (`guard`, `JsonServer`).

    Use it wherever an `AppRunner` would be: same arguments, same sites.
    """

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return JsonServer(
            guard(made.request_handler),
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )


def install_faust(app: Any) -> None:
    """Serve a Faust app's web pages through the boundary (call before the worker starts).

    Faust's aiohttp driver makes its `AppRunner` when the app's web server is first
    touched (declaring a page does) and sets it up only when the worker starts; the
    runner is swapped for a `BoundaryRunner` on the same aiohttp application. Faust's
    own table views take the table's name from the path, and `/router/{name}/` fails
    with a KeyError for a name that is no table: a middleware answers those 404 first.
    """
    from faust.web.drivers.aiohttp import Web

    driver = app.web
    if not isinstance(driver, Web):  # another web driver: nothing of aiohttp's to guard
        return
    if isinstance(driver._runner, BoundaryRunner):
        return
    driver._runner = BoundaryRunner(driver.web_app, access_log=None)

    @web.middleware
    async def known_tables(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        name = request.match_info.get("name")
        if name is not None and name not in app.tables:
            raise HttpProblem(404, f"no table named {name!r} here")
        return await handler(request)

    driver.web_app.middlewares.append(known_tables)


async def serve_until_stopped(
    app: web.Application,
    host: str,
    port: int,
    *,
    announce: Callable[[], None],
    shutdown_timeout: float,
) -> None:
    """Serve `app` through the boundary on host:port until SIGINT or SIGTERM, then stop.

    What `web.run_app` does, with the `BoundaryRunner`: listen only after start-up,
    then on a signal stop listening, let running requests finish (up to
    `shutdown_timeout`) and run the app's cleanup.
    """
    runner = BoundaryRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    try:
        await web.TCPSite(runner, host, port).start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        announce()
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def _http_exception_text(request: web.BaseRequest, exc: web.HTTPException) -> str:
    """The message of an aiohttp HTTPException: its own text, else a useful default."""
    text = exc.text or ""
    if text and text != f"{exc.status}: {exc.reason}":
        return _first_line(text)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"method {exc.method} is not allowed on {request.path}; allowed: {allowed}"
    if exc.status == 404:
        return f"not found: {request.path}"
    return str(exc.reason)


def _body_problem(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, RequestPayloadError) else exc
    if isinstance(cause, ContentEncodingError):
        return "the body does not decode as its Content-Encoding says"
    if isinstance(cause, HttpProcessingError):
        return f"the body could not be read: {_first_line(cause.message)}"
    return "the body could not be read"


def _first_line(text: str) -> str:
    """The first line of an aiohttp message (the rest quotes the raw request), trimmed."""
    line = text.strip().splitlines()[0] if text.strip() else "no detail"
    return line.rstrip(":")[:MAX_ERROR_CHARS]
