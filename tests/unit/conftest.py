"""Fixtures shared by the unit tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No Sluice or Kafka variables from the machine running the tests."""
    for name in list(os.environ):
        if name.upper().startswith(("SLUICE_", "KAFKA_", "SCHEMA_REGISTRY")):
            monkeypatch.delenv(name)
    return monkeypatch
