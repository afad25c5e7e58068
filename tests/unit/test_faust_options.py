"""The options a stage's Faust app is built with, pinned value by value.

They come from the settings alone (plus the worker's port, bind address and name), and
every one of them is a decision: a session timeout, a linger, an offset reset. Moving the
converter or the settings it reads must not change any of them silently.
"""

from __future__ import annotations

import enum
import socket
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from pipelines.runtime import faustapp
from pipelines.runtime.faustapp import StageApp, Worker, make_app
from pipelines.runtime.health import CrashRecordingSupervisor
from pipelines.settings import SecuritySettings, Settings

WORKER_VARIABLES = ("SLUICE_WEB_PORT", "SLUICE_WEB_BIND", "SLUICE_WORKER_NAME")


def built_with(
    monkeypatch: pytest.MonkeyPatch, stage: str, settings: Settings
) -> tuple[str, dict[str, Any]]:
    """The app id and the keyword arguments `make_app` builds the stage's app with."""
    seen: list[tuple[str, dict[str, Any]]] = []
    original = StageApp.__init__

    def recording(self: StageApp, app_id: str, **options: Any) -> None:
        seen.append((app_id, dict(options)))
        original(self, app_id, **options)

    with monkeypatch.context() as m:
        m.setattr(StageApp, "__init__", recording)
        make_app(stage, settings)
    [(app_id, options)] = seen
    assert options.pop("stage") == stage
    assert options.pop("settings") is settings
    return app_id, options


def _described(value: Any) -> Any:
    """Credentials compared by their fields; TLS contexts by their type."""
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "__dict__") and type(value).__module__.startswith("faust"):
        return (type(value).__name__, {k: _described(v) for k, v in vars(value).items()})
    if type(value).__name__ == "SSLContext":
        return "SSLContext"
    return value


def test_default_settings_give_these_options(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    app_id, options = built_with(clean_env, "orders", Settings(data_dir=tmp_path))
    assert app_id == "sluice-orders"
    host = socket.gethostname()
    assert options == {  # keyword arguments: their order means nothing to Faust
        "broker": "kafka://127.0.0.1:9092",
        "store": "rocksdb://",
        "datadir": str(tmp_path / "faust" / "sluice-orders" / f"{host}-6066"),
        "web_port": 6066,
        "web_bind": "127.0.0.1",
        "web_host": "127.0.0.1",
        "topic_partitions": 6,
        "table_standby_replicas": 0,
        "processing_guarantee": "at_least_once",
        "broker_commit_interval": 1.0,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "stream_buffer_maxsize": 1000,
        "producer_linger": 0.05,
        "producer_max_batch_size": 16_384,
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 3.0,
        "consumer_group_instance_id": None,
        "Worker": Worker,
        "agent_supervisor": CrashRecordingSupervisor,
    }


@pytest.mark.parametrize(
    ("stage", "port"), [("orders", 6066), ("notifications", 6067), ("analytics", 6068)]
)
def test_each_stage_has_its_app_id_and_default_port(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, stage: str, port: int
) -> None:
    app_id, options = built_with(clean_env, stage, Settings(data_dir=tmp_path, topic_prefix="p."))
    assert app_id == f"p.sluice-{stage}"
    assert options["web_port"] == port
    assert options["datadir"] == str(tmp_path / "faust" / app_id / f"{socket.gethostname()}-{port}")


def test_the_worker_variables_and_every_setting_reach_the_app(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("SLUICE_WEB_PORT", "16170")
    clean_env.setenv("SLUICE_WEB_BIND", "0.0.0.0")
    clean_env.setenv("SLUICE_WORKER_NAME", "w3")
    settings = Settings(
        bootstrap_servers="b1:9093, b2:9093",
        data_dir=tmp_path,
        partitions=12,
        store="memory://",
        commit_interval_s=2.5,
        group_instance_id="pod-1",
        backpressure={"buffer_per_partition": 40, "high": 10, "low": 5},
    )
    app_id, options = built_with(clean_env, "analytics", settings)
    assert app_id == "sluice-analytics"
    assert options["broker"] == "kafka://b1:9093;kafka://b2:9093"
    assert options["store"] == "memory://"
    assert options["datadir"] == str(tmp_path / "faust" / "sluice-analytics" / "w3")
    assert (options["web_port"], options["web_bind"]) == (16170, "0.0.0.0")
    assert options["topic_partitions"] == 12
    assert options["broker_commit_interval"] == 2.5
    assert options["stream_buffer_maxsize"] == 100  # never below 100
    assert options["consumer_group_instance_id"] == "pod-1"
    assert "broker_credentials" not in options


def test_sasl_and_tls_give_one_principal_everywhere(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sasl = SecuritySettings(
        protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        username="orders",
        password=SecretStr("s3cret"),
    )
    _, options = built_with(clean_env, "orders", Settings(data_dir=tmp_path, security=sasl))
    assert _described(options["broker_credentials"]) == (
        "SASLCredentials",
        {
            "username": "orders",
            "password": "s3cret",
            "ssl_context": "SSLContext",
            "protocol": "SASL_SSL",
            "mechanism": "SCRAM-SHA-512",
        },
    )
    _, plain = built_with(clean_env, "orders", Settings(data_dir=tmp_path))
    assert {k: v for k, v in options.items() if k != "broker_credentials"} == plain

    tls = SecuritySettings(protocol="SSL")
    _, options = built_with(clean_env, "orders", Settings(data_dir=tmp_path, security=tls))
    assert _described(options["broker_credentials"]) == (
        "SSLCredentials",
        {"context": "SSLContext"},
    )


def test_extra_options_are_passed_on(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    original = StageApp.__init__

    def recording(self: StageApp, app_id: str, **options: Any) -> None:
        seen.append(options)
        original(self, app_id, **options)

    clean_env.setattr(StageApp, "__init__", recording)
    faustapp.make_app("orders", Settings(data_dir=tmp_path), topic_replication_factor=1)
    assert seen[0]["topic_replication_factor"] == 1
