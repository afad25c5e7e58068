"""The generated configuration reference: current, complete, and naming variables that work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from pipelines.cli import run
from pipelines.cli.config import env_names, markdown, setting_rows
from pipelines.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "deploy" / "CONFIGURATION.md"
PROBE = "zz-probe"


def _attr(settings: Settings, dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def read_by_settings(monkeypatch: pytest.MonkeyPatch, env: str, path: str) -> bool:
    """Whether Settings() reads `env` for `path`: the probe value fails validation or lands."""
    with monkeypatch.context() as m:
        m.setenv(env, PROBE)
        try:
            settings = Settings()
        except (ValidationError, SettingsError):
            return True  # the defaults validate, so only the probe can have failed
        return str(_attr(settings, path)) == PROBE


def test_configuration_reference_is_current() -> None:
    assert REFERENCE.read_text() == markdown(), (
        "deploy/CONFIGURATION.md is out of date: "
        "run `sluice config --markdown > deploy/CONFIGURATION.md`"
    )


def test_every_leaf_setting_is_listed() -> None:
    def leaves(model: Any, prefix: str = "") -> set[str]:
        out: set[str] = set()
        for name, info in model.model_fields.items():
            sub = info.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields"):
                out |= leaves(sub, f"{prefix}{name}.")
            else:
                out.add(prefix + name)
        return out

    assert {r.path for r in setting_rows()} == leaves(Settings)


def test_every_listed_variable_is_read(clean_env: pytest.MonkeyPatch) -> None:
    unread = [r.env for r in setting_rows() if not read_by_settings(clean_env, r.env, r.path)]
    assert unread == []


def test_the_probe_tells_a_name_the_model_ignores(clean_env: pytest.MonkeyPatch) -> None:
    # One `_` instead of `__` is an unknown top-level name, which pydantic-settings ignores
    # silently (unknown nested keys are errors); the probe must tell it.
    assert not read_by_settings(clean_env, "SLUICE_BACKPRESSURE_HIGH", "backpressure.high")
    assert "SLUICE_BACKPRESSURE_HIGH" not in env_names()
    assert {"KAFKA_BOOTSTRAP_SERVERS", "SLUICE_BOOTSTRAP_SERVERS"} <= env_names()


def test_whole_groups_are_read_as_json(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SLUICE_BACKPRESSURE", '{"high": 8000, "low": 2000}')
    clean_env.setenv("SLUICE_DELIVERY__SMTP", '{"port": 2525}')
    settings = Settings()
    assert (settings.backpressure.high, settings.backpressure.low) == (8000, 2000)
    assert settings.delivery.smtp.port == 2525
    assert {"SLUICE_BACKPRESSURE", "SLUICE_DELIVERY", "SLUICE_DELIVERY__SMTP"} <= env_names()


def test_secrets_are_marked() -> None:
    secret = {r.env for r in setting_rows() if r.secret}
    assert secret == {
        "SLUICE_SECURITY__PASSWORD",
        "SLUICE_DELIVERY__SMTP__PASSWORD",
        "SLUICE_DELIVERY__HTTP__AUTH_VALUE",
    }


def test_cli_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config", "--markdown"]) == 0
    assert capsys.readouterr().out == markdown()
    assert run(["config", "--json"]) == 0
    assert '"env": "SLUICE_GROUP_INSTANCE_ID"' in capsys.readouterr().out
