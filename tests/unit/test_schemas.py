from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipelines.schemas import SchemaError, SchemaStore, crc64_avro, default_store, schemas_dir
from tests.unit.samples import SAMPLES


def _reference_crc64(data: bytes) -> int:
    """CRC-64-AVRO straight from the spec's pseudo-code, bit by bit (independent of ours)."""
    empty = 0xC15D213AA4D7A795
    fp = empty
    for byte in data:
        fp ^= byte
        for _ in range(8):
            fp = (fp >> 1) ^ (empty if fp & 1 else 0)
    return fp


def test_every_event_has_a_schema_and_a_sample() -> None:
    assert set(default_store().names()) == set(SAMPLES)


def test_fingerprints_follow_the_spec() -> None:
    assert crc64_avro(b'"null"') == 0x63DD24E7CC258F8A  # the spec's fingerprint of "null"
    for name in default_store().names():
        for version in default_store().versions(name):
            expected = _reference_crc64(version.canonical.encode()).to_bytes(8, "little")
            assert version.fingerprint == expected


def test_canonical_form_drops_logical_types_and_docs() -> None:
    placed = default_store().latest("sluice.orders.OrderPlaced")
    assert '"logicalType"' not in placed.canonical
    assert '"doc"' not in placed.canonical
    assert placed.canonical.startswith('{"name":"sluice.orders.OrderPlaced","type":"record"')


def test_every_field_is_documented_and_snake_case() -> None:
    def walk(schema: object) -> None:
        if isinstance(schema, dict):
            if schema.get("type") == "record":
                assert schema.get("doc"), schema["name"]
                for f in schema["fields"]:
                    assert f.get("doc"), f"{schema['name']}.{f['name']}"
                    assert f["name"] == f["name"].lower(), f["name"]
                    walk(f["type"])
            for key in ("items", "values"):
                walk(schema.get(key))
        elif isinstance(schema, list):
            for branch in schema:
                walk(branch)

    for path in schemas_dir().glob("*.avsc"):
        walk(json.loads(path.read_text()))


def test_money_is_never_a_float() -> None:
    for path in schemas_dir().glob("*.avsc"):
        assert '"float"' not in path.read_text()
        assert '"double"' not in path.read_text()


def test_order_placed_has_a_real_v2() -> None:
    versions = default_store().versions("sluice.orders.OrderPlaced")
    assert [v.version for v in versions] == [1, 2]
    assert versions[0].fingerprint != versions[1].fingerprint


def test_misnamed_file_is_refused(tmp_path: Path) -> None:
    shutil.copy(schemas_dir() / "OrderStatus.v1.avsc", tmp_path / "OrderState.v1.avsc")
    with pytest.raises(SchemaError, match="file says OrderState"):
        SchemaStore.load(tmp_path)


def test_version_gaps_are_refused(tmp_path: Path) -> None:
    shutil.copy(schemas_dir() / "OrderStatus.v1.avsc", tmp_path / "OrderStatus.v2.avsc")
    with pytest.raises(SchemaError, match="without gaps"):
        SchemaStore.load(tmp_path)


def test_unknown_schema_lists_the_known(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="unknown schema 'nope'"):
        default_store().latest("nope")
