"""Sluice reads confluent-kafka's admin API by its documented names only.

`confluent_kafka.admin._acl`, `._config`, `._listoffsets`, `._resource` and
`confluent_kafka.cimpl` are how the library arranges its own files; their names move
between releases while `confluent_kafka.admin.X` stays.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRIVATE = re.compile(r"^\s*(from|import)\s+confluent_kafka\.(cimpl\b|\w+\._\w+)", re.MULTILINE)


def test_no_module_imports_a_private_confluent_kafka_module() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
        for folder in ("pipelines", "producers", "consumers", "bench", "tests")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for match in PRIVATE.finditer(path.read_text())
    ]
    assert offenders == []


def test_the_check_sees_a_private_import() -> None:
    assert PRIVATE.search("from confluent_kafka.admin._acl import AclBinding")
    assert PRIVATE.search("from confluent_kafka.cimpl import NewTopic")
    assert not PRIVATE.search("from confluent_kafka.admin import AclBinding")
