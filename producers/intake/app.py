"""The aiohttp application: routes, JSON errors, metrics, and the background parts' lifecycle.

Start-up order matters and is enforced by aiohttp (the site listens only after
`cleanup_ctx` has entered): recent idempotency keys are re-read from `orders.placed`
first, so a restarted intake never publishes a retry twice; then the status feed, the
lag watcher and the producer start. Shutdown stops listening, lets running requests
finish, flushes the producer (answering every request still waiting for a delivery
report) and stops the threads.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pipelines import httperrors
from pipelines.backpressure import EDGES, LagSignal
from pipelines.errors import SluiceError
from pipelines.schemas import default_store
from pipelines.serde import serde_for
from pipelines.settings import Settings
from producers.intake import openapi
from producers.intake.config import IntakeConfig
from producers.intake.fastcheck import with_fast_path
from producers.intake.gate import Gate
from producers.intake.idempotency import IdempotencyStore
from producers.intake.metrics import IntakeMetrics
from producers.intake.publisher import KafkaPublisher, Publisher
from producers.intake.recovery import recent_placed
from producers.intake.service import Intake
from producers.intake.status import StatusFeed, StatusView
from producers.intake.validation import (
    PLACED,
    Rejection,
    Validator,
    check_key,
    read_order,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Runtime:
    """The intake's parts; the publisher, feed and watcher exist only while it runs."""

    settings: Settings
    config: IntakeConfig
    background: bool
    validate: Validator
    intake: Intake
    metrics: IntakeMetrics
    document: bytes
    feed: StatusFeed | None = None
    publisher_factory: Callable[[], Publisher] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


RUNTIME = web.AppKey("runtime", Runtime)


def create_app(
    settings: Settings,
    config: IntakeConfig | None = None,
    *,
    publisher: Callable[[], Publisher] | None = None,
    background: bool = True,
) -> web.Application:
    """The intake as an aiohttp app (serve it with `pipelines.httperrors.BoundaryRunner`).

    `publisher` makes the producer (default: a KafkaPublisher on `orders.placed`);
    `background=False` skips the key rebuild, status feed and lag watcher, for tests
    that need the HTTP surface without a reachable broker.
    """
    config = config or IntakeConfig()
    serde = serde_for(settings)
    topic = settings.topic("orders.placed")
    metrics = IntakeMetrics()
    signal = None
    if background and settings.backpressure.enabled:
        signal = LagSignal(settings, EDGES["intake"], settings.backpressure)
    gate = Gate(
        signal,
        mode=config.overload,
        queue_limit=config.queue_limit,
        queue_timeout_s=config.queue_timeout_s,
        interval_s=settings.backpressure.interval_s,
        on_transition=lambda kind, _lag: metrics.transitions.labels(kind).inc(),
    )
    intake = Intake(
        keys=IdempotencyStore(config.idempotency_window_s, config.idempotency_max_keys),
        status=StatusView(config.status_max_orders),
        gate=gate,
        publisher=_NotStarted(),
        encode=lambda name, record: serde.encode(name, record, topic=topic),
        metrics=metrics,
    )
    runtime = Runtime(
        settings,
        config,
        background,
        with_fast_path(serde.validate, default_store(), (PLACED,)),
        intake,
        metrics,
        json.dumps(openapi.document(config)).encode(),
        publisher_factory=publisher,
    )
    _gauges(runtime)
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[_errors_and_metrics])
    app[RUNTIME] = runtime
    app.router.add_post("/orders", place_order)
    app.router.add_get("/orders/{order_id}", order_status)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/openapi.json", openapi_json)
    app.cleanup_ctx.append(_lifecycle)
    return app


async def place_order(request: web.Request) -> web.Response:
    """POST /orders: validate, publish once, answer after the broker's acknowledgement."""
    rt = request.app[RUNTIME]
    key = check_key(request.headers.get("Idempotency-Key"))
    raw = await _body(request, rt.config.max_body_bytes)
    order = read_order(
        raw,
        key=key,
        max_lines=rt.config.max_lines,
        now_ms=int(time.time() * 1000),
        validate=rt.validate,
    )
    accepted = await rt.intake.place(order, key)
    headers = {"Location": f"/orders/{accepted.order_id}"}
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return web.Response(
        body=accepted.json(), status=202, headers=headers, content_type="application/json"
    )


async def _body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit) from None


def _too_large(limit: int) -> Rejection:
    return Rejection(413, f"the body is larger than the limit of {limit} bytes")


async def order_status(request: web.Request) -> web.Response:
    """GET /orders/{id}: the latest known status (eventually consistent)."""
    order_id = request.match_info["order_id"]
    state = request.app[RUNTIME].intake.status.get(order_id)
    if state is None:
        raise Rejection(404, f"no order {order_id} known here (yet)")
    return web.json_response(state.body())


async def health(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    intake = rt.intake
    signal = intake.gate.signal
    return web.json_response(
        {
            "status": "ok",
            "paused": intake.gate.paused,
            "lag": signal.lag if signal is not None else None,
            "overload": rt.config.overload,
            "queued_requests": intake.gate.waiting,
            "idempotency_keys": len(intake.keys),
            "status_orders": len(intake.status),
            "status_caught_up": rt.feed.caught_up if rt.feed is not None else None,
            "producer_queue": intake.publisher.queued(),
        }
    )


async def prometheus(request: web.Request) -> web.Response:
    body = request.app[RUNTIME].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[RUNTIME].document, content_type="application/json")


@web.middleware
async def _errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer counted per route and status, errors answered by the shared boundary.

    The boundary (`pipelines.httperrors`) would answer an exception anyway; it is asked
    here so the count has the status the client gets. A client that hung up is counted
    as a disconnect, not as a status: no answer reached it.
    """
    started = time.perf_counter()
    try:
        response = await handler(request)
    except Exception as exc:
        if httperrors.client_gone(request, exc):
            request.app[RUNTIME].metrics.disconnects.inc()
            raise
        response = httperrors.answer(request, exc)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request.app[RUNTIME].metrics.observe(route, response.status, time.perf_counter() - started)
    return response


def _gauges(rt: Runtime) -> None:
    intake, gauge = rt.intake, rt.metrics.gauge
    gauge(
        "sluice_intake_backpressure_paused",
        "1 while new orders are refused",
        lambda: float(intake.gate.paused),
    )
    gauge(
        "sluice_intake_lag",
        "Order stage lag on orders.placed",
        lambda: float(intake.gate.signal.lag if intake.gate.signal else 0),
    )
    gauge(
        "sluice_intake_queued_requests",
        "Requests held while paused",
        lambda: float(intake.gate.waiting),
    )
    gauge(
        "sluice_intake_idempotency_keys",
        "Idempotency keys remembered",
        lambda: float(len(intake.keys)),
    )
    gauge(
        "sluice_intake_status_orders",
        "Orders in the status view",
        lambda: float(len(intake.status)),
    )
    gauge(
        "sluice_intake_producer_queue",
        "Records awaiting delivery",
        lambda: float(intake.publisher.queued()),
    )


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Start the background parts before listening; stop them after the last request."""
    rt = app[RUNTIME]
    if rt.background:
        await _rebuild_keys(rt)
        rt.feed = StatusFeed(rt.settings, rt.intake.status, asyncio.get_running_loop())
        rt.feed.start()
        await rt.intake.gate.measure()
        rt.tasks.append(asyncio.create_task(rt.intake.gate.watch()))
    factory = rt.publisher_factory or (lambda: _kafka_publisher(rt))
    rt.intake.publisher = factory()
    try:
        yield
    finally:
        for task in rt.tasks:
            task.cancel()
        await asyncio.gather(*rt.tasks, return_exceptions=True)
        await rt.intake.publisher.close()
        loop = asyncio.get_running_loop()
        if rt.feed is not None:
            await loop.run_in_executor(None, rt.feed.stop)
        if isinstance(rt.intake.gate.signal, LagSignal):
            await loop.run_in_executor(None, rt.intake.gate.signal.close)


def _kafka_publisher(rt: Runtime) -> Publisher:
    return KafkaPublisher(
        rt.settings,
        rt.settings.topic("orders.placed"),
        linger_ms=rt.config.linger_ms,
        delivery_timeout_s=rt.config.delivery_timeout_s,
    )


async def _rebuild_keys(rt: Runtime) -> None:
    """Re-read recent orders and keys (blocking reads, in a thread: nothing else runs yet)."""
    window = rt.config.idempotency_window_s
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    job = loop.run_in_executor(None, lambda: rt.intake.recover(recent_placed(rt.settings, window)))
    try:
        learnt = await asyncio.wait_for(job, rt.config.startup_timeout_s)
    except TimeoutError:
        raise SluiceError(
            f"could not re-read recent Idempotency-Keys from orders.placed within "
            f"{rt.config.startup_timeout_s:.0f}s; raise --startup-timeout or shorten "
            "--idempotency-window"
        ) from None
    log.info("re-read %d idempotency keys in %.1fs", learnt, time.monotonic() - started)


class _NotStarted:
    """The publisher slot before start-up: any use is a bug, reported as a 503."""

    async def publish(self, key: bytes, value: bytes, headers: Any = ()) -> Any:
        raise Rejection(503, "the intake is starting; retry shortly", headers={"Retry-After": "1"})

    async def close(self) -> None:
        return None

    def queued(self) -> int:
        return 0


#: Allocations between two young-generation collections while serving (CPython: 700).
GC_YOUNG_THRESHOLD = 50_000


async def _lean_gc(_app: web.Application) -> AsyncIterator[None]:
    """Keep the cyclic garbage collector off the request path of a serving intake.

    Profiled under the benchmark's load, collections took about a twentieth of the
    intake's CPU: every full collection walked the whole start-up heap (Faust, Avro,
    aiohttp, pydantic: roughly 70 ms each), and at CPython's threshold of 700 a young
    collection ran every few dozen requests, promoting each in-flight request's objects
    into older generations, which then triggered more full collections. Freezing what
    exists once start-up is done takes it out of every collection (frozen objects are
    still freed by reference counting, e.g. re-read keys that age out; only a cycle among
    them would stay until exit), and a higher young threshold lets nearly all of a
    request's objects die by reference counting before any collection sees them. Cycles
    made while serving are still collected, only less often. Installed by `serve` only:
    in-process tests keep the defaults.
    """
    gc.collect()
    gc.freeze()
    before = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def serve(settings: Settings, config: IntakeConfig, announce: Callable[[str], None]) -> None:
    """Run the intake until SIGINT/SIGTERM, then shut down cleanly (blocking)."""
    app = create_app(settings, config)
    app.cleanup_ctx.append(_lean_gc)  # after the start-up parts: freeze what they made
    asyncio.run(
        httperrors.serve_until_stopped(
            app,
            config.host,
            config.port,
            announce=lambda: announce(
                f"intake listening on http://{config.host}:{config.port} "
                f"(topics {settings.topic('orders.placed')}, {settings.bootstrap_servers})"
            ),
            shutdown_timeout=config.delivery_timeout_s + 5,
        )
    )
