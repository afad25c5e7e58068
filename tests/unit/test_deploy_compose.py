"""The compose file: valid against the compose specification, and consistent with the code.

The schema is the compose-spec JSON schema vendored by check-jsonschema (a PyPI package);
the file is validated after interpolation with the documented `.env.example` values, as
compose itself validates. No container engine is involved.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pipelines.cli.config import env_names
from pipelines.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "compose" / ".env.example"
POM = ROOT / "deploy" / "local" / "pom.xml"
#: Variables of the compose file itself, not Sluice settings.
COMPOSE_KNOBS = {
    "SLUICE_IMAGE",
    "KAFKA_HOST_PORT",
    "KAFKA_CLUSTER_ID",
    "PROVIDERS_SMTP_HOST_PORT",
    "PROVIDERS_HTTP_HOST_PORT",
}
REPLICAS = {"orders": 2, "notifications": 2, "analytics": 1}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor"
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text())
    return schema


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR-default}` and `${VAR:-default}` with the given values."""
    return INTERPOLATION.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


def load(env: dict[str, str] | None = None) -> dict[str, Any]:
    text = interpolate(COMPOSE.read_text(), env_example() if env is None else env)
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def validate(data: dict[str, Any]) -> None:
    schema = compose_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls(schema).validate(data)


def sluice_services(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in data["services"].items()
        if svc.get("image", "").startswith("sluice")
    }


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load()


def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    validate(compose)


def test_compose_file_matches_with_every_default(compose: dict[str, Any]) -> None:
    validate(load(env={}))  # no .env at all: the defaults in the file must be enough


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("orders", "healthchek", {"test": ["CMD", "true"]}),
        ("orders", "deploy", {"replica": 2}),
        ("kafka", "ports", "127.0.0.1:9092:9092"),
    ],
)
def test_the_compose_check_rejects_broken_files(
    compose: dict[str, Any], service: str, key: str, value: Any
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"][service][key] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_every_variable_is_documented_and_used() -> None:
    text = COMPOSE.read_text()
    used = {m.group(1) for m in INTERPOLATION.finditer(text)}
    documented = set(env_example())
    assert used - documented == set(), "document these in .env.example"
    assert documented - used == set(), ".env.example names variables the file never reads"


def test_sluice_names_are_settings_or_compose_knobs() -> None:
    known = env_names()
    for path in (COMPOSE, ENV_EXAMPLE):
        named = set(re.findall(r"\bSLUICE_[A-Z0-9_]+\b", path.read_text()))
        assert named - known - COMPOSE_KNOBS == set(), path.name
    assert COMPOSE_KNOBS.isdisjoint(known)


def test_every_sluice_container_env_is_a_valid_setting(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = env_names()
    for name in list(os.environ):
        if name.upper().startswith(("SLUICE_", "KAFKA_", "SCHEMA_REGISTRY")):
            monkeypatch.delenv(name)
    services = sluice_services(compose)
    assert set(services) >= {"topics", "providers", "orders", "notifications", "analytics"}
    for name, svc in services.items():
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items() if v is not None}
        assert set(env) <= known, (name, set(env) - known)
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            settings = Settings()
        if env:
            assert settings.bootstrap_servers == "kafka:19092", name
            assert settings.topic_prefix == "", name


def test_kafka_is_the_official_image_in_kraft_mode(compose: dict[str, Any]) -> None:
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    assert version
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{version.group(1)}"
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert not any("ZOOKEEPER" in key for key in env)
    assert "healthcheck" in kafka


def test_host_ports_bind_loopback_only(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_workers_replicas_health_and_graceful_stop(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for stage, replicas in REPLICAS.items():
        svc = services[stage]
        command = svc["command"]
        assert command[:2] == ["worker", stage]
        assert svc["deploy"]["replicas"] == replicas
        port = command[command.index("--web-port") + 1]
        assert f"http://127.0.0.1:{port}/health" in " ".join(svc["healthcheck"]["test"])
        stop_timeout = float(command[command.index("--stop-timeout") + 1])
        assert stop_timeout + 10 <= float(svc["stop_grace_period"].rstrip("s"))
        assert svc["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_topics_job_and_local_providers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    topics = services["topics"]
    assert topics["command"] == ["topics", "create"]
    assert topics["restart"] == "no"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["providers"]["command"][:2] == ["providers", "up"]
    gateway = services["providers-gateway"]
    assert gateway["network_mode"] == "service:providers"
    mount = gateway["volumes"][0].split(":")
    assert (COMPOSE.parent / mount[0]).resolve() == COMPOSE.parent / "forward.py"
    assert gateway["entrypoint"][-1] == mount[1]
    forwarded = {int(p.split(":")[0]) for p in gateway["command"]}
    env = services["notifications"]["environment"]
    assert int(env["SLUICE_DELIVERY__SMTP__PORT"]) in forwarded
    assert env["SLUICE_DELIVERY__SMTP__HOST"] == "providers"
