from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipelines.cli import run
from pipelines.schemas import (
    SchemaError,
    SchemaStore,
    SchemaVersion,
    crc64_fingerprint,
    default_store,
    schemas_dir,
    store_for,
)
from tests.unit.samples import SAMPLES


def _reference_crc64(data: bytes) -> int:
    """CRC-64-AVRO from the Avro spec's table-driven pseudo-code, independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_every_event_has_a_schema_and_a_sample() -> None:
    assert set(default_store().names()) == set(SAMPLES)


def test_reference_crc_matches_the_spec_example() -> None:
    # the fingerprint of the schema "null" that the spec's test vectors list
    assert _reference_crc64(b'"null"') == 0x63DD24E7CC258F8A
    assert crc64_fingerprint('"null"') == (0x63DD24E7CC258F8A).to_bytes(8, "little")


def test_order_placed_v1_fingerprint_is_pinned() -> None:
    """Published v1 must never change: readers elsewhere look it up by these bytes."""
    v1 = default_store().get("sluice.orders.OrderPlaced", 1)
    expected = _reference_crc64(v1.canonical.encode()).to_bytes(8, "little")
    assert v1.fingerprint == expected
    assert v1.fingerprint.hex() == PINNED_ORDER_PLACED_V1


def test_fingerprints_follow_the_spec() -> None:
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


PINNED_ORDER_PLACED_V1 = "70561430a0382729"


def test_every_version_is_found_by_its_fingerprint() -> None:
    store = default_store()
    for name in store.names():
        for version in store.versions(name):
            assert store.by_fingerprint(version.fingerprint) is version
    assert store.by_fingerprint(b"\x00" * 8) is None


def test_store_is_loaded_once_per_directory() -> None:
    assert store_for(schemas_dir()) is store_for(schemas_dir())
    assert default_store() is store_for(schemas_dir())


def test_schemas_dir_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_SCHEMAS_DIR", str(tmp_path))
    assert schemas_dir() == tmp_path
    monkeypatch.delenv("SLUICE_SCHEMAS_DIR")
    assert (schemas_dir() / "OrderPlaced.v1.avsc").is_file()


def test_timestamps_parse_as_plain_longs_but_keep_their_logical_type() -> None:
    placed = default_store().latest("sluice.orders.OrderPlaced")
    placed_at = next(f for f in placed.raw["fields"] if f["name"] == "placed_at")
    assert placed_at["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    parsed_at = next(f for f in placed.parsed["fields"] if f["name"] == "placed_at")
    assert parsed_at["type"] == {"type": "long"}  # no logicalType: fastavro yields ints


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "cannot read schema"),
        ('{"type": "enum", "name": "OrderStatus", "symbols": ["A"]}', "named record"),
        ('{"type": "record", "name": "OrderStatus", "fields": [{"name": "x"}]}', "invalid Avro"),
    ],
)
def test_broken_files_are_refused_with_the_path(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "OrderStatus.v1.avsc").write_text(text)
    with pytest.raises(SchemaError, match=needle):
        SchemaStore.load(tmp_path)


def test_a_full_name_in_the_name_attribute_is_accepted(tmp_path: Path) -> None:
    raw = json.loads((schemas_dir() / "OrderStatus.v1.avsc").read_text())
    raw["name"] = f"{raw.pop('namespace')}.OrderStatus"
    path = tmp_path / "OrderStatus.v1.avsc"
    path.write_text(json.dumps(raw))
    version = SchemaVersion.from_file(path)
    assert version.name == "sluice.orders.OrderStatus"
    assert version.fingerprint == default_store().latest("sluice.orders.OrderStatus").fingerprint


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"no \.avsc files"):
        SchemaStore.load(tmp_path)


def test_cli_list_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["schemas", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    placed = [r for r in rows if r["name"] == "sluice.orders.OrderPlaced"]
    assert [r["version"] for r in placed] == [1, 2]
    assert placed[0]["fingerprint"] == PINNED_ORDER_PLACED_V1
    assert {r["name"] for r in rows} == set(SAMPLES)
