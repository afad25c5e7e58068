"""What every Sluice Faust app shares: configuration from Settings, raw topics, DLQ, web.

Stages read and write raw bytes and decode with `pipelines.serde` themselves, so that an
undecodable record is dead-lettered with its reason instead of being logged and skipped
by a codec. Each app is its own consumer group (its id), keeps its tables under its own
data directory per worker, and serves `/health` and Prometheus `/metrics` on its web port
(bound to 127.0.0.1 unless told otherwise).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faust
from faust.transport.producer import ProducerBuffer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pipelines import httperrors
from pipelines.catalog import APP_IDS
from pipelines.diskcheck import check_worker_dir
from pipelines.errors import RecordRef
from pipelines.settings import Settings
from pipelines.stages import commits

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
CLEAN_MARK = "clean-shutdown"  # ditto: local tables match the changelogs
DEFAULT_WEB_PORTS = {"orders": 6066, "notifications": 6067, "analytics": 6068}


def web_port(stage: str) -> int:
    """The web port: SLUICE_WEB_PORT (set by `sluice worker`), else the stage's default."""
    return int(os.environ.get("SLUICE_WEB_PORT", DEFAULT_WEB_PORTS[stage]))


def worker_dir(settings: Settings, app_id: str, port: int, name: str | None = None) -> Path:
    """Per-worker table storage: two workers on one host must not share a RocksDB."""
    name = name or os.environ.get("SLUICE_WORKER_NAME") or f"{socket.gethostname()}-{port}"
    return settings.data_dir / "faust" / app_id / name


def prepare_state_dir(directory: Path) -> bool:
    """Before a worker starts: keep its local tables only if it last stopped cleanly.

    A table write lands in the local RocksDB at once and in its changelog topic only when
    Faust's producer gets to it. After a crash the local store can hold writes Kafka never
    got, while the input offsets that caused them were not committed: the restarted
    worker would then believe an order already ended (its outcome exists only locally)
    and never publish it. So unless the last run left CLEAN_MARK (written after its final
    commit), the local state is discarded and restored from the changelogs, which are
    the truth. Returns True when state was discarded.
    """
    check_worker_dir(directory)  # unwritable or full: one clear StorageError, not a traceback
    mark = directory / CLEAN_MARK
    discard = directory.exists() and any(directory.iterdir()) and not mark.exists()
    if discard:
        log.warning(
            "%s: last run did not stop cleanly; restoring tables from changelogs", directory
        )
        shutil.rmtree(directory)
    mark.unlink(missing_ok=True)
    return discard


def idempotent_faust_producer() -> None:
    """Give every Faust producer `enable_idempotence` (faust-streaming does only in
    transactions). When a broker dies mid-request the producer retries the batch; without
    idempotence the retry can append it twice, and an outcome record (our table changelog
    *is* the output topic) would appear twice. Found by the broker-failover test."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    producer = faust_aiokafka.Producer
    if getattr(producer, "_sluice_idempotent", False):
        return
    base = producer._settings_extra

    def settings_extra(self: Any) -> Mapping[str, Any]:
        return {**base(self), "acks": "all", "enable_idempotence": True}

    producer._settings_extra = settings_extra  # type: ignore[method-assign]
    producer._sluice_idempotent = True  # type: ignore[attr-defined]


class Worker(faust.Worker):
    """Faust's worker without its progress spinner's logging hook.

    At `--loglevel warn` or above Faust installs a spinner handler on the root logger
    and sets the root level to DEBUG, so that every debug message anywhere (aiokafka
    logs one per record sent) is built and formatted only to turn the spinner. On a busy
    stage that cost about 6% of the CPU. The log output is the same without it.
    """

    def _setup_spinner_handler(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None


def broker_auth(settings: Settings) -> dict[str, Any]:
    """Faust's `broker_credentials`/`ssl_context` for the settings' security (none for PLAINTEXT).

    Faust hands these to every client it makes (consumer, producer, topic admin), so
    a stage logs in as one principal everywhere.
    """
    security = settings.security
    if security.sasl_mechanism:
        password = security.password.get_secret_value() if security.password else None
        creds = faust.SASLCredentials(
            username=security.username,
            password=password,
            ssl_context=security.ssl_context(),
            mechanism=security.sasl_mechanism,
        )
        return {"broker_credentials": creds}
    if security.uses_tls:
        return {"broker_credentials": faust.SSLCredentials(security.ssl_context())}
    return {}


def make_app(stage: str, settings: Settings, **extra: Any) -> faust.App:
    """A Faust app for `stage`, configured from `settings` only."""
    app_id = settings.group(APP_IDS[stage])
    port = web_port(stage)
    datadir = worker_dir(settings, app_id, port)
    datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    # Table writes queue in Faust's producer buffer; at its default of 100 pending records
    # every busy agent stalls on 0.1 s waits. A larger bound keeps memory bounded still.
    ProducerBuffer.max_messages = 5000
    app = faust.App(
        app_id,
        broker=settings.faust_broker(),
        store=settings.store,
        datadir=str(datadir),
        web_port=port,
        web_bind=os.environ.get("SLUICE_WEB_BIND", "127.0.0.1"),
        web_host="127.0.0.1",
        topic_partitions=settings.partitions,
        table_standby_replicas=0,
        processing_guarantee="at_least_once",
        broker_commit_interval=settings.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        stream_buffer_maxsize=max(100, settings.backpressure.buffer_per_partition),
        producer_linger=0.05,
        # A crashed worker's partitions move after the session timeout: Faust's 60 s
        # default would stall them a minute; 10 s is Kafka's long-time default.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        consumer_group_instance_id=settings.group_instance_id,
        Worker=Worker,
        **broker_auth(settings),
        **extra,
    )
    commits.install(app)
    idempotent_faust_producer()
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
        assigned = app.consumer.assignment() if app.consumer else set()
        return web.json(
            {
                "status": "ok",
                "app": app.conf.id,
                "rebalancing": app.rebalancing,
                "assigned_partitions": len(assigned),
            }
        )

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
