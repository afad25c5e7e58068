"""`explain`: the one translation from any failure to one line and an exit code."""

from __future__ import annotations

import errno

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from pipelines.errors import ConfigError, TopicError, explain
from pipelines.settings import Settings


def test_sluice_errors_keep_their_message_and_code() -> None:
    assert explain(TopicError("topic x is missing")) == ("topic x is missing", 1)
    assert explain(ConfigError("low must be below high")) == ("low must be below high", 2)


def test_malformed_nested_settings_name_the_field_and_show_the_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_BACKPRESSURE", "{bad")
    with pytest.raises(SettingsError) as caught:
        Settings()
    line, code = explain(caught.value)
    assert code == 2
    assert "backpressure" in line
    assert "SLUICE_BACKPRESSURE='{" in line
    assert "\n" not in line


def test_invalid_values_list_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_PARTITIONS", "abc")
    with pytest.raises(ValidationError) as caught:
        Settings()
    line, code = explain(caught.value)
    assert (line.split(":")[0], code) == ("invalid settings", 2)
    assert "partitions" in line


def test_os_errors_name_the_problem() -> None:
    assert explain(OSError(errno.ENOSPC, "No space", "/data"))[0] == "the disk is full: /data"
    assert "address already in use" in explain(OSError(errno.EADDRINUSE, "in use"))[0]


def test_anything_else_is_one_line_naming_its_type() -> None:
    line, code = explain(RuntimeError("first\nsecond"))
    assert code == 1
    assert "RuntimeError: first" in line
    assert "second" not in line
