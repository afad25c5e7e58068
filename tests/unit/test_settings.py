from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from pipelines.settings import SecuritySettings, Settings


def test_defaults_point_at_the_local_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert Settings().bootstrap_servers == "127.0.0.1:9092"


def test_kafka_bootstrap_servers_env_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "b1:9092,b2:9092")
    settings = Settings()
    assert settings.bootstrap_servers == "b1:9092,b2:9092"
    assert settings.faust_broker() == "kafka://b1:9092;kafka://b2:9092"


def test_unknown_keys_are_errors() -> None:
    with pytest.raises(ValidationError, match="bootstrap_server"):
        Settings(bootstrap_server="typo:9092")  # type: ignore[call-arg]


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.partitions = 3  # type: ignore[misc]


def test_sasl_needs_credentials() -> None:
    with pytest.raises(ValidationError, match="needs a SASL mechanism"):
        SecuritySettings(protocol="SASL_SSL")


def test_secrets_do_not_leak_into_repr() -> None:
    sec = SecuritySettings(
        protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        username="orders",
        password=SecretStr("hunter2"),
    )
    settings = Settings(security=sec)
    assert "hunter2" not in repr(settings)
    assert settings.confluent()["sasl.password"] == "hunter2"
    assert settings.aiokafka()["sasl_plain_password"] == "hunter2"


def test_empty_bootstrap_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least one"):
        Settings(bootstrap_servers=" , ")
