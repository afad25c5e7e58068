"""One frozen settings model for every client, command and deployment.

CLI flags, environment variables, compose files and Kubernetes manifests all feed this
model, and the converters at the bottom are the only place that turn it into
librdkafka, aiokafka or Faust configuration. Keeping one translation point is what
keeps security settings, timeouts and bootstrap servers consistent across producers,
Faust workers and admin tools.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.catalog import APP_IDS
from pipelines.delivery.settings import DeliverySettings
from pipelines.stages.windows import WindowConfig
from pipelines.topology import RETRY_LADDER_S

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

#: librdkafka's own log lines go here (not straight to stderr), so the CLI decides what shows.
KAFKA_CLIENT_LOGGER = logging.getLogger("sluice.kafka")


def default_data_dir() -> Path:
    """Where local state (the local broker's data and logs) lives unless told otherwise."""
    return Path.home() / ".local" / "share" / "sluice"


#: The most a producer batch of one partition holds: Faust's default, 16 KiB. 1 MB
#: (librdkafka's default) made the floor forwarder 29% faster (aiokafka keeps one
#: request in flight per broker, and a send to a full batch waits for it), but with it
#: a SIGKILLed and restarted broker left the order worker's commits hung in 3 of 4 runs
#: of `test_broker_restart_loses_nothing_and_restarts_nothing` (2 of 2 passed at 16 KiB).
#: Kept at the default until that is understood; `bench.faust_floor`'s FLOOR_MAX_BATCH
#: measures the difference.
PRODUCER_BATCH_BYTES = 16_384


class SecuritySettings(BaseModel):
    """How clients authenticate to the brokers; secrets stay `SecretStr` end to end."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> SecuritySettings:
        if self.protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.username and self.password
        ):
            msg = f"security protocol {self.protocol} needs a SASL mechanism, username and password"
            raise ValueError(msg)
        return self

    def confluent(self) -> dict[str, Any]:
        """librdkafka properties for this security setup."""
        conf: dict[str, Any] = {"security.protocol": self.protocol.lower()}
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.username
            conf["sasl.password"] = self.password.get_secret_value() if self.password else None
        if self.ca_file:
            conf["ssl.ca.location"] = str(self.ca_file)
        if self.cert_file and self.key_file:
            conf["ssl.certificate.location"] = str(self.cert_file)
            conf["ssl.key.location"] = str(self.key_file)
        return conf

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context asyncio clients (aiokafka, Faust) need; None without TLS.

        Verifies the broker against `ca_file` (or the system store) including its host
        name, and presents the client certificate when one is set (mutual TLS).
        """
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file and self.key_file:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context

    def aiokafka(self) -> dict[str, Any]:
        """aiokafka keyword arguments for this security setup."""
        conf: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            conf["ssl_context"] = self.ssl_context()
        if self.sasl_mechanism:
            conf["sasl_mechanism"] = self.sasl_mechanism
            conf["sasl_plain_username"] = self.username
            password = self.password.get_secret_value() if self.password else None
            conf["sasl_plain_password"] = password
        return conf

    def faust(self) -> dict[str, Any]:
        """Faust's `broker_credentials` for this security setup (none for PLAINTEXT).

        Faust hands them to every client it makes (consumer, producer, topic admin), so a
        stage logs in as one principal everywhere.
        """
        import faust  # only a stage app needs it: importing the settings loads no Faust

        if self.sasl_mechanism:
            creds = faust.SASLCredentials(
                username=self.username,
                password=self.password.get_secret_value() if self.password else None,
                ssl_context=self.ssl_context(),
                mechanism=self.sasl_mechanism,
            )
            return {"broker_credentials": creds}
        if self.uses_tls:
            return {"broker_credentials": faust.SSLCredentials(self.ssl_context())}
        return {}

    def describe(self) -> str:
        """Who a client logs in as, for messages: never the password."""
        if self.sasl_mechanism:
            return f"user {self.username!r} ({self.sasl_mechanism} over {self.protocol})"
        return self.protocol


class OrdersSettings(BaseModel):
    """The order stage's business knobs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decline_rate: float = Field(
        0.03, ge=0.0, le=1.0, description="Share of orders the issuer declines."
    )
    request_retention_s: int = Field(
        900,
        ge=60,
        description="How long stock decisions are kept to recognise re-sent requests; "
        "a worker down longer than this may apply a re-sent request twice.",
    )


class NotificationSettings(BaseModel):
    """The notification task queue: concurrency, retries and group-wide rate limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int = Field(8, ge=1, le=256, description="Sends in flight per channel per worker.")
    max_attempts: int = Field(4, ge=1, le=50, description="Tries before a task is dead-lettered.")
    retry_delays_s: tuple[float, ...] = Field(
        RETRY_LADDER_S, description="Backoff ladder; one delay topic per step."
    )
    jitter: float = Field(0.2, ge=0.0, lt=1.0, description="Random share added to each delay.")
    rate_email: float = Field(200.0, gt=0, description="Emails per second, whole group.")
    rate_sms: float = Field(50.0, gt=0, description="SMS per second, whole group.")
    rate_push: float = Field(200.0, gt=0, description="Pushes per second, whole group.")
    provider_idempotent: bool = Field(
        False,
        description="SMS/push providers honour Idempotency-Key: a send whose outcome a crash "
        "or timeout hid may be repeated (otherwise it is dead-lettered for a human).",
    )

    def rate(self, channel: str) -> float:
        """The group-wide rate limit of one channel (EMAIL, SMS or PUSH)."""
        return float(getattr(self, f"rate_{channel.lower()}"))


class BackpressureSettings(BaseModel):
    """Marks and interval (`SLUICE_BACKPRESSURE__*`); low must be below high."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    high: int = Field(5000, gt=0, description="Pause upstream above this lag (records).")
    low: int = Field(1000, ge=0, description="Resume once lag is below this.")
    interval_s: float = Field(1.0, gt=0, le=60, description="How often lag is measured.")
    buffer_per_partition: int = Field(
        1000, ge=1, le=100_000, description="In-flight records a stage holds per partition."
    )

    @model_validator(mode="after")
    def _low_below_high(self) -> BackpressureSettings:
        if self.low >= self.high:
            raise ValueError(f"backpressure low mark ({self.low}) must be below high ({self.high})")
        return self


class Settings(BaseSettings):
    """Everything a Sluice process needs to know, read once from flags and environment.

    Environment variables use the `SLUICE_` prefix, except the two names Kafka users
    already export: `KAFKA_BOOTSTRAP_SERVERS` and `SCHEMA_REGISTRY_URL`. Nested models use
    `__`, e.g. `SLUICE_SECURITY__PROTOCOL=SASL_SSL`.
    """

    model_config = SettingsConfigDict(
        env_prefix="SLUICE_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        populate_by_name=True,
    )

    bootstrap_servers: str = Field(
        DEFAULT_BOOTSTRAP,
        validation_alias=AliasChoices("bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS"),
        description="Comma-separated host:port list of brokers.",
    )
    schema_registry_url: str | None = Field(
        None,
        validation_alias=AliasChoices("schema_registry_url", "SCHEMA_REGISTRY_URL"),
        description="Use Confluent framing and this registry instead of single-object encoding.",
    )
    client_id: str = "sluice"
    group_instance_id: str | None = Field(
        None,
        min_length=1,
        max_length=249,
        description="Static group membership (KIP-345): a stable id per worker, e.g. the pod name; "
        "a worker restarted within the session timeout keeps its partitions without a rebalance.",
    )
    # One worker's own identity: set per process (`sluice worker` sets the port and the
    # name for its child), so `as_env` does not hand them on to other processes.
    worker_name: str | None = Field(
        None,
        description="Names this worker's table directory (`sluice worker --name`); "
        "unset: the host name and the web port.",
    )
    web_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of this worker's /health and /metrics (`sluice worker -p` sets it); "
        "unset: the stage's own (`sluice worker --help` lists them).",
    )
    web_bind: str = Field(
        "127.0.0.1",
        description="Address a worker's web server listens on; 0.0.0.0 when probes or "
        "scrapers come from outside (a container).",
    )
    data_dir: Path = Field(default_factory=default_data_dir)
    partitions: int = Field(6, ge=1, le=1000, description="Partitions of every pipeline topic.")
    topic_prefix: str = Field(
        "",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Prepended to every topic and group name: several pipelines on one cluster.",
    )
    security: SecuritySettings = SecuritySettings()
    request_timeout_s: float = Field(10.0, gt=0)
    store: Literal["rocksdb://", "memory://"] = Field(
        "rocksdb://", description="Faust table store: RocksDB (rocksdict) on disk, or memory."
    )
    commit_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often stages commit offsets (the replay window)."
    )
    orders: OrdersSettings = OrdersSettings()
    notifications: NotificationSettings = NotificationSettings()
    delivery: DeliverySettings = DeliverySettings()
    analytics: WindowConfig = WindowConfig()
    backpressure: BackpressureSettings = BackpressureSettings()

    @model_validator(mode="after")
    def _bootstrap_not_empty(self) -> Settings:
        if not [s for s in self.bootstrap_servers.split(",") if s.strip()]:
            raise ValueError("bootstrap servers must name at least one host:port")
        return self

    def as_env(self) -> dict[str, str]:
        """Environment variables that rebuild these settings in a child process.

        Nested models travel as JSON (pydantic-settings parses them back); secrets are
        revealed here on purpose, because a worker needs the real password, and the
        environment of a child process is not printed anywhere.
        """
        env = {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers}
        if self.schema_registry_url:
            env["SCHEMA_REGISTRY_URL"] = self.schema_registry_url
        plain = (
            "client_id",
            "data_dir",
            "partitions",
            "topic_prefix",
            "request_timeout_s",
            "store",
            "commit_interval_s",
        )
        env.update({f"SLUICE_{name.upper()}": str(getattr(self, name)) for name in plain})
        nested = ("orders", "notifications", "delivery", "security", "analytics", "backpressure")
        for name in nested:
            model = getattr(self, name)
            env[f"SLUICE_{name.upper()}"] = json.dumps(_revealed(model.model_dump(mode="python")))
        return env

    def topic(self, name: str) -> str:
        """The physical name of catalog topic `name` (with the configured prefix)."""
        return self.topic_prefix + name

    def logical_topic(self, physical: str) -> str:
        """The catalog name of a physical topic (the prefix removed)."""
        if self.topic_prefix and physical.startswith(self.topic_prefix):
            return physical[len(self.topic_prefix) :]
        return physical

    def group(self, name: str) -> str:
        """The physical name of a consumer group or Faust app id."""
        return self.topic_prefix + name

    def confluent_producer(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka producer configuration: idempotent, acks=all, Java-compatible partitioning.

        `murmur2_random` is the partitioner Java clients, aiokafka and Faust use; librdkafka's
        default hashes differently, which would put a key in another partition than the one
        Faust expects for a co-partitioned table.
        """
        conf = {"enable.idempotence": True, "acks": "all", "partitioner": "murmur2_random"}
        return self.confluent(**{**conf, **overrides})

    def confluent(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka configuration (producers, consumers, admin) for these settings."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "logger": KAFKA_CLIENT_LOGGER,
            **self.security.confluent(),
        }
        conf.update(overrides)
        return conf

    def aiokafka(self, **overrides: Any) -> dict[str, Any]:
        """aiokafka client keyword arguments for these settings."""
        conf: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            **self.security.aiokafka(),
        }
        conf.update(overrides)
        return conf

    def faust_broker(self) -> str:
        """The Faust `broker=` URL: one `kafka://host:port` per bootstrap server."""
        hosts = [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]
        return ";".join(f"kafka://{h}" for h in hosts)

    def worker_dir(self, app_id: str, port: int, name: str | None = None) -> Path:
        """Per-worker table storage: two workers on one host must not share a RocksDB.

        Named after the worker (`name`, else `worker_name`), else the host and the web
        port the worker really serves on, which no two running workers on one host share.
        """
        name = name or self.worker_name or f"{socket.gethostname()}-{port}"
        return self.data_dir / "faust" / app_id / name

    def faust(self, stage: str, web_port: int) -> dict[str, Any]:
        """Faust app options for a worker of `stage` serving on `web_port`: everything but
        the app id and the worker and supervisor classes, which the app builder adds.

        Nothing here touches the disk or the network (Faust's CLI imports the app before
        anything can report a failure well); `datadir` is a first guess that the worker
        replaces once it knows the port it really serves on.
        """
        return {
            "broker": self.faust_broker(),
            "store": self.store,
            "datadir": str(self.worker_dir(self.group(APP_IDS[stage]), web_port)),
            "web_port": web_port,
            "web_bind": self.web_bind,
            "web_host": "127.0.0.1",
            "topic_partitions": self.partitions,
            "table_standby_replicas": 0,
            "processing_guarantee": "at_least_once",
            "broker_commit_interval": self.commit_interval_s,
            "consumer_auto_offset_reset": "earliest",
            "producer_acks": -1,
            "stream_buffer_maxsize": max(100, self.backpressure.buffer_per_partition),
            "producer_linger": 0.05,
            "producer_max_batch_size": PRODUCER_BATCH_BYTES,
            # A crashed worker's partitions move after the session timeout: Faust's 60 s
            # default would stall them a minute; 10 s is Kafka's long-time default.
            "broker_session_timeout": 10.0,
            "broker_heartbeat_interval": 3.0,
            "consumer_group_instance_id": self.group_instance_id,
            **self.security.faust(),
        }


def _revealed(value: Any) -> Any:
    """A model dump with SecretStr values shown and paths as strings (JSON-ready)."""
    if isinstance(value, dict):
        return {k: _revealed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_revealed(v) for v in value]
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()


class LocalKafkaSettings(BaseSettings):
    """What the local broker (`sluice kafka up`, the tests' and benches' clusters) reads
    from the environment.

    Apart from `Settings` on purpose: the local broker runs where no pipeline settings
    are built (tests, benches) and must not fail over an unrelated pipeline setting, and
    JAVA_HOME and XDG_CACHE_HOME belong to the machine, not to Sluice. Read it when it
    is needed (`LocalKafkaSettings()`), not at import: tests change the environment.
    An empty variable counts as unset, as it always did.
    """

    model_config = SettingsConfigDict(
        env_prefix="SLUICE_KAFKA_", env_ignore_empty=True, frozen=True, extra="ignore"
    )

    heap_mb: int | None = Field(
        None, description="JVM heap per node (SLUICE_KAFKA_HEAP_MB); unset or 0: the default."
    )
    deploy_dir: Path | None = Field(
        None,
        description="A directory holding deploy/local's pom.xml and log4j2.properties "
        "(SLUICE_KAFKA_DEPLOY_DIR), when Sluice runs outside its checkout.",
    )
    java_home: Path | None = Field(
        None, validation_alias="JAVA_HOME", description="Run $JAVA_HOME/bin/java, not PATH's."
    )
    cache_home: Path = Field(
        default_factory=lambda: Path.home() / ".cache",
        validation_alias="XDG_CACHE_HOME",
        description="The user's cache directory (XDG); resolved classpaths are kept there.",
    )


def schemas_dir_override() -> Path | None:
    """`$SLUICE_SCHEMAS_DIR` (unset or empty: None).

    A plain function, not a `Settings` field: schemas load on first use by code that has
    no settings at hand (serde, `sluice schemas check`), and must not fail over an
    unrelated pipeline setting.
    """
    value = os.environ.get("SLUICE_SCHEMAS_DIR")
    return Path(value) if value else None
