"""The int-range guard behind the decoder (`pipelines.avroguard`), and the decoder using it.

fastavro decodes an Avro `int` written as a long varint (up to ten bytes) to a value
beyond 32 bits; such a record must be a DecodeError, not an order with quantity 2**40
that fails later, outside the DLQ, when the stage re-encodes it.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from pipelines.avroguard import INT_MAX, INT_MIN, int_guard
from pipelines.errors import RecordRef
from pipelines.schemas import default_store
from pipelines.serde import MAGIC, ConfluentSerde, DecodeError, SingleObjectSerde
from tests.unit.samples import LINE, SAMPLES

PLACED = "sluice.orders.OrderPlaced"
REF = RecordRef("orders.placed", 1, 7, b"k", b"v")
BIG = 2**40


def _guard(schema: Any) -> Any:
    guard = int_guard(schema)
    assert guard is not None
    return guard


def test_a_schema_without_ints_has_no_guard() -> None:
    assert (
        int_guard({"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]})
        is None
    )
    assert int_guard(default_store().latest("sluice.orders.OrderRejected").raw) is None
    assert int_guard({"type": "array", "items": ["null", "string"]}) is None


@pytest.mark.parametrize(("value", "ok"), [(INT_MAX, True), (INT_MIN, True), (INT_MAX + 1, False)])
def test_int_edges(value: int, ok: bool) -> None:
    assert _guard("int")(value) is ok
    assert _guard({"type": "int"})(value) is ok


def test_ints_inside_arrays_maps_unions_and_named_types() -> None:
    inner = {"type": "record", "name": "Inner", "fields": [{"name": "n", "type": "int"}]}
    schema = {
        "type": "record",
        "name": "Outer",
        "namespace": "t",
        "fields": [
            {"name": "inner", "type": inner},
            {"name": "again", "type": ["null", "t.Inner"]},
            {
                "name": "counts",
                "type": {"type": "map", "values": {"type": "array", "items": "int"}},
            },
            {"name": "maybe", "type": ["null", "int"]},
            {"name": "wide", "type": ["int", "long"]},
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A"]}},
        ],
    }
    guard = _guard(schema)
    good = {
        "inner": {"n": 1},
        "again": None,
        "counts": {"x": [1, 2]},
        "maybe": None,
        "wide": BIG,  # may be the long branch: not checked
        "kind": "A",
    }
    assert guard(good)
    for change in (
        {"inner": {"n": BIG}},
        {"again": {"n": -BIG}},
        {"counts": {"x": [1, BIG]}},
        {"maybe": BIG},
    ):
        assert not guard({**good, **change}), change


def test_a_recursive_schema_is_guarded_at_every_depth() -> None:
    schema = {
        "type": "record",
        "name": "Node",
        "fields": [
            {"name": "value", "type": "int"},
            {"name": "next", "type": ["null", "Node"]},
        ],
    }
    guard = _guard(schema)
    assert guard({"value": 1, "next": {"value": 2, "next": None}})
    assert not guard({"value": 1, "next": {"value": BIG, "next": None}})


def _laxly_written(name: str, record: dict[str, Any]) -> bytes:
    """Single-object bytes from fastavro's writer, which writes any int as a long."""
    schema = default_store().latest(name)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema.parsed, record)
    return MAGIC + schema.fingerprint + body.getvalue()


@pytest.mark.parametrize("quantity", [BIG, INT_MAX + 1, INT_MIN - 1])
def test_an_int_beyond_32_bits_is_a_decode_error(quantity: int) -> None:
    data = _laxly_written(PLACED, {**SAMPLES[PLACED], "lines": [{**LINE, "quantity": quantity}]})
    with pytest.raises(DecodeError) as info:
        SingleObjectSerde().decode(data, PLACED, source=REF)
    assert str(info.value) == (
        "corrupt sluice.orders.OrderPlaced v2 body: "
        f"lines[0].quantity: {quantity} is out of range for int"
    )
    assert info.value.record is REF


def test_the_edges_of_int_still_decode() -> None:
    for quantity in (INT_MAX, INT_MIN):
        record = {**SAMPLES[PLACED], "lines": [{**LINE, "quantity": quantity}]}
        assert SingleObjectSerde().decode(_laxly_written(PLACED, record), PLACED) == record


def test_confluent_framing_is_guarded_too() -> None:
    codec = ConfluentSerde("mock://guard")
    framed = codec.encode(PLACED, SAMPLES[PLACED], topic="orders.placed")
    body = _laxly_written(PLACED, {**SAMPLES[PLACED], "lines": [{**LINE, "quantity": BIG}]})
    with pytest.raises(DecodeError, match="out of range for int"):
        codec.decode(framed[:5] + body[10:], PLACED, source=REF)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_sample_passes_its_guard(name: str) -> None:
    guard = int_guard(default_store().latest(name).raw)
    assert guard is None or guard(SAMPLES[name])
