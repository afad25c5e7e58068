"""`pipelines` exports a small, deliberate API, and importing it builds nothing.

A name added to `pipelines.__all__` is a promise to users; this test makes the promise a
decision (change it here on purpose), not a side effect of an import."""

from __future__ import annotations

import subprocess
import sys

import pipelines


def test_the_package_exports_exactly_its_public_names() -> None:
    assert sorted(pipelines.__all__) == [
        "BrokerUnavailable",
        "CATALOG",
        "ConfigError",
        "RecordError",
        "RecordRef",
        "SecuritySettings",
        "Settings",
        "SluiceError",
        "TopicError",
        "TopicSpec",
        "get_settings",
    ]
    assert all(hasattr(pipelines, name) for name in pipelines.__all__)


def test_importing_the_package_builds_no_faust_app() -> None:
    probe = (
        "import sys, pipelines; print('faust' in sys.modules, 'pipelines.orders' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
