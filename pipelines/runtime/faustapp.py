"""What every Sluice Faust app shares: configuration from Settings, raw topics, DLQ, web.

Stages read and write raw bytes and decode with `pipelines.serde` themselves, so that an
undecodable record is dead-lettered with its reason instead of being logged and skipped
by a codec. Each app is its own consumer group (its id), keeps its tables under its own
data directory per worker, and serves `/health` and Prometheus `/metrics` on its web port
(bound to 127.0.0.1 unless told otherwise).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import faust
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pipelines import httperrors, runtime
from pipelines.catalog import APP_IDS
from pipelines.errors import RecordRef
from pipelines.runtime import commits, startup
from pipelines.runtime.health import AgentCrashes, CrashRecordingSupervisor, health_body
from pipelines.runtime.statedir import CLEAN_MARK, DirLock
from pipelines.settings import Settings
from pipelines.topology import WEB_PORTS

log = logging.getLogger(__name__)

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}
RAW_SCHEMA: faust.Schema[bytes, bytes] = faust.Schema(**RAW)
JSON_STATE: faust.Schema[bytes, Any] = faust.Schema(
    key_type=bytes, key_serializer="raw", value_serializer="json"
)
EXIT_METRICS = "metrics-at-exit.prom"  # in the worker's data directory
DEFAULT_WEB_PORTS = WEB_PORTS


def web_port(stage: str, settings: Settings) -> int:
    """The web port: `settings.web_port` (SLUICE_WEB_PORT, which `sluice worker` sets),
    else the stage's default."""
    return DEFAULT_WEB_PORTS[stage] if settings.web_port is None else settings.web_port


class StageApp(faust.App):
    """A Faust app that knows its stage and the settings it was built from, so that its
    worker can run the stage's start-up checks, and that records its agents' crashes."""

    def __init__(self, app_id: str, *, stage: str, settings: Settings, **options: Any) -> None:
        super().__init__(app_id, **options)
        self.stage = stage
        self.settings = settings
        self.crashes = AgentCrashes()

    def start_plan(self) -> startup.StartPlan:
        """What `startup.prepare` checks for this app as configured now (web port included,
        which Faust's `worker -p` sets after the module was imported)."""
        conf = self.conf
        changelogs = {
            table.name: table.changelog_topic.get_topic_name() for table in self.tables.values()
        }
        return startup.StartPlan(
            stage=self.stage,
            settings=self.settings,
            directory=Path(conf.datadir),
            tabledir=Path(conf.tabledir),
            web_host=conf.web_bind if conf.web_enabled else None,
            web_port=int(conf.web_port),
            changelogs=changelogs if conf.store.scheme == "rocksdb" else {},
        )


class Worker(faust.Worker):
    """The worker of every stage app, whichever command starts it.

    `faust -A pipelines.<stage>:app worker` builds its worker from the app's
    `conf.Worker`, so the start-up that makes a stage safe lives here and not in the
    `sluice worker` wrapper: the table directory follows the web port the worker really
    serves on (or its name), and before any Faust service starts, `startup.prepare`
    checks the directory, the port, the broker and the topics, and keeps local tables
    only if they belong to this cluster and stopped cleanly. Every failure, there or
    while Faust starts, leaves as one line and a non-zero exit code.

    It also drops Faust's progress spinner's logging hook: at `--loglevel warn` or above
    Faust installs a spinner handler on the root logger and sets the root level to DEBUG,
    so that every debug message anywhere (aiokafka logs one per record sent) is built and
    formatted only to turn the spinner. On a busy stage that cost about 6% of the CPU.
    (Registered, with what else the stages change in Faust, in `pipelines.runtime`.)
    """

    def __init__(self, app: faust.App, *services: Any, **options: Any) -> None:
        super().__init__(app, *services, **options)
        self._dir_lock: DirLock | None = None
        self._startup_failure: BaseException | None = None
        self._tracebacks = startup.StartupTracebacks()
        if isinstance(app, StageApp):  # before Faust's banner prints the directory
            app_id = app.conf.id
            app.conf.datadir = app.settings.worker_dir(app_id, int(app.conf.web_port))

    def _setup_spinner_handler(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None

    def execute_from_commandline(self) -> NoReturn:
        """Check, then run Faust; any failure on the way is one line and an exit code."""
        if isinstance(self.app, StageApp):
            self._setup_logging()  # now, so that the checks log in the worker's format
            self.override_logging = False
            self._tracebacks.install()
            try:
                runtime.check_versions()
                self._dir_lock = startup.prepare(self.app.start_plan())
            except Exception as exc:
                startup.exit_with(exc, self.stderr)
        try:
            super().execute_from_commandline()
        except SystemExit as stop:
            failure = self._startup_failure or self.crash_reason
            if stop.code and failure is not None:
                startup.exit_with(failure, self.stderr)
            raise

    async def start(self) -> None:
        try:
            await super().start()
        except Exception as exc:
            self._startup_failure = exc
            raise

    async def on_startup_finished(self) -> None:
        self._tracebacks.active = False  # running now: errors log with their tracebacks
        loop = type(asyncio.get_running_loop())
        log.info("running on %s.%s", loop.__module__, loop.__qualname__)  # uvloop's, normally
        await super().on_startup_finished()


def make_app(stage: str, settings: Settings, **extra: Any) -> StageApp:
    """A Faust app for `stage`, configured from `settings` only (`Settings.faust`).

    Nothing here touches the disk or the network: the module that calls this is imported
    by `faust -A ...` before anything can report a failure well. The worker's start-up
    (`Worker`) does the checks.
    """
    app = StageApp(
        settings.group(APP_IDS[stage]),
        stage=stage,
        settings=settings,
        Worker=Worker,
        agent_supervisor=CrashRecordingSupervisor,
        **settings.faust(stage, web_port(stage, settings)),
        **extra,
    )
    runtime.tune(app)  # an unsupported Faust is refused by the worker's start-up
    commits.install(app)
    return app


def table(
    app: faust.App, name: str, schema: faust.Schema[Any, Any], changelog: faust.TopicT | None = None
) -> Any:
    """A table with an explicit schema, and (optionally) a catalog topic as its changelog."""
    options = {"driver": "rocksdict"} if app.conf.store.scheme == "rocksdb" else None
    # key_type and value_type must be given as well as the schema: Faust derives the
    # serializers of the changelog it creates from them, and would otherwise default the
    # key to JSON and fail to decode raw keys when restoring the table.
    return app.Table(
        name,
        schema=schema,
        key_type=schema.key_type,
        value_type=schema.value_type,
        changelog_topic=changelog,
        partitions=app.conf.topic_partitions,
        options=options,
    )


class DirectSender:
    """Sends records through the app's own aiokafka producer, below Faust's topic layer.

    Faust wraps every send in channel, future-message and callback machinery that costs
    several times the encode itself; outputs that need none of it (no table, no attached
    offsets) go straight to the producer. It is the same producer, so Faust's commit,
    which flushes it before committing offsets, still covers these records: delivery
    stays at-least-once.
    """

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._producer: Any = None

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        producer = self._producer
        if producer is None:
            producer = self._producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        await producer.send(topic, value, key=key, headers=headers)


class StageMetrics:
    """Prometheus metrics of one stage, in a registry of its own (served at /metrics)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.registry = CollectorRegistry()
        self.events_in = Counter(
            "sluice_events_in", "Records consumed", ["stage", "topic"], registry=self.registry
        )
        self.events_out = Counter(
            "sluice_events_out", "Records produced", ["stage", "topic"], registry=self.registry
        )
        self.dead_letters = Counter(
            "sluice_dead_letters",
            "Records sent to the DLQ",
            ["stage", "reason"],
            registry=self.registry,
        )
        self.errors = Counter(
            "sluice_errors", "Processing errors", ["stage", "kind"], registry=self.registry
        )
        self.latency = Histogram(
            "sluice_processing_seconds",
            "Time to process one record",
            ["stage", "topic"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        self._in: dict[str, Any] = {}
        self._out: dict[str, Any] = {}
        self.table_size = Gauge(
            "sluice_table_keys",
            "Keys held in a table on this worker",
            ["stage", "table"],
            registry=self.registry,
        )

    def received(self, topic: str) -> None:
        """Count one consumed record (label children cached: this is on the hot path)."""
        child = self._in.get(topic)
        if child is None:
            child = self._in[topic] = self.events_in.labels(self.stage, topic)
        child.inc()

    def sent(self, topic: str) -> None:
        """Count one produced record."""
        child = self._out.get(topic)
        if child is None:
            child = self._out[topic] = self.events_out.labels(self.stage, topic)
        child.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def install_web(
    app: faust.App, metrics: StageMetrics, tables: Mapping[str, Any] | None = None
) -> None:
    """Add /health and /metrics to the app's web server."""
    httperrors.install_faust(app)  # every failure on this web server answers as JSON

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        """200 and status ok while every agent runs; 503 naming the agent and its error
        once one has crashed (see `pipelines.runtime.health`)."""
        assigned = app.consumer.assignment() if app.consumer else set()
        base = {
            "app": app.conf.id,
            "rebalancing": app.rebalancing,
            "assigned_partitions": len(assigned),
        }
        crashes = app.crashes if isinstance(app, StageApp) else AgentCrashes()
        body, status = health_body(crashes, base)
        return web.json(body, status=status)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        for name, table in (tables or {}).items():
            metrics.table_size.labels(metrics.stage, name).set(len(table))
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def final_metrics(_app: Any, *_args: Any, signal: Any, **_: Any) -> None:
        """Leave the last counts behind (after the final commit): a drained worker's
        figures stay readable once its /metrics is gone."""
        directory = Path(app.conf.datadir)
        try:
            (directory / EXIT_METRICS).write_bytes(metrics.exposition())
            (directory / CLEAN_MARK).write_text(f"{time.time():.0f}\n")
        except OSError as exc:
            log.warning("cannot write to %s: %s", directory, exc)


def record_ref(event: Any) -> RecordRef:
    """The coordinates and bytes of the record behind a Faust event.

    The topic is the physical one (with the prefix): it is what logs and dead-letter
    headers must name, so that an operator's tools find the record where it really is.
    """
    message = event.message
    return RecordRef(message.topic, message.partition, message.offset, message.key, message.value)


def now_ms() -> int:
    return int(time.time() * 1000)
