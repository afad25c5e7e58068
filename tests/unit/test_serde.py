from __future__ import annotations

import contextlib
import io
import json
import os
import random
import string

import avro.io
import avro.schema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.errors import RecordRef
from pipelines.schemas import SchemaStore, default_store
from pipelines.serde import (
    HEADER,
    MAGIC,
    ConfluentSerde,
    DecodeError,
    EncodeError,
    SingleObjectSerde,
    serde_for,
)
from pipelines.settings import Settings
from tests.support.registry import schema_registry
from tests.unit.samples import SAMPLES

PLACED = "sluice.orders.OrderPlaced"
serde = SingleObjectSerde()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_single_object_round_trip(name: str) -> None:
    data = serde.encode(name, SAMPLES[name])
    assert data[:2] == MAGIC
    assert data[2:HEADER] == default_store().latest(name).fingerprint
    assert serde.decode(data) == SAMPLES[name]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_confluent_framing_round_trip_over_http(name: str) -> None:
    with schema_registry() as url:
        confluent = ConfluentSerde(url)
        data = confluent.encode(name, SAMPLES[name], topic="some.topic")
        assert data[0] == 0
        assert ConfluentSerde(url).decode(data) == SAMPLES[name]


def test_registry_serde_is_chosen_by_settings() -> None:
    with schema_registry() as url:
        assert isinstance(serde_for(Settings(schema_registry_url=url)), ConfluentSerde)
    assert isinstance(serde_for(Settings()), SingleObjectSerde)


def _v1_only_store(tmp_path: object) -> SchemaStore:
    from pathlib import Path

    from pipelines.schemas import SchemaVersion, schemas_dir

    root = Path(str(tmp_path))
    (root / "OrderPlaced.v1.avsc").write_bytes((schemas_dir() / "OrderPlaced.v1.avsc").read_bytes())
    return SchemaStore([SchemaVersion.from_file(root / "OrderPlaced.v1.avsc")])


def test_v1_records_read_as_v2_with_the_default(tmp_path: object) -> None:
    old_code = SingleObjectSerde(_v1_only_store(tmp_path))
    v1_record = {k: v for k, v in SAMPLES[PLACED].items() if k != "client_ref"}
    data = old_code.encode(PLACED, v1_record)
    writer, decoded = serde.decode_with_schema(data)
    assert writer.version == 1
    assert decoded == {**v1_record, "client_ref": None}


def test_v2_records_read_by_v1_code(tmp_path: object) -> None:
    old_code = SingleObjectSerde(_v1_only_store(tmp_path))
    # old code does not know v2's fingerprint: it needs the newer schema file to resolve,
    # which is exactly what replaying new records with old code would need
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        old_code.decode(serde.encode(PLACED, SAMPLES[PLACED]))
    v2 = default_store().latest(PLACED)
    v1 = _v1_only_store(tmp_path).latest(PLACED)
    from pipelines.serde import read_body

    data = serde.encode(PLACED, SAMPLES[PLACED])
    decoded = read_body(data, HEADER, v2, v1, None)
    assert "client_ref" not in decoded
    assert decoded["order_id"] == SAMPLES[PLACED]["order_id"]


def test_apache_avro_decodes_what_fastavro_encodes() -> None:
    for name, record in SAMPLES.items():
        data = serde.encode(name, record)
        schema = avro.schema.parse(json.dumps(default_store().latest(name).raw))
        decoded = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(data[HEADER:])))
        for key, value in record.items():
            got = decoded[key]
            if hasattr(got, "timestamp"):  # the avro library hands out datetimes
                got = round(got.timestamp() * 1000)
            assert got == value, (name, key)


REF = RecordRef("orders.placed", 3, 42, b"k", b"v")
GOOD = serde.encode(PLACED, SAMPLES[PLACED])


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "too short"),
        (GOOD[:5], "too short"),
        (b"\x00" + GOOD[1:], "not Avro single-object"),
        (MAGIC + b"\x01" * 8 + GOOD[HEADER:], "unknown schema fingerprint"),
        (GOOD[:-4], "cannot decode body"),
        (GOOD + b"\x00\x01", "trailing bytes"),
        (os.urandom(64), ""),
    ],
)
def test_bad_bytes_raise_one_typed_error_with_the_record(data: bytes, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle) as info:
        serde.decode(data, PLACED, source=REF)
    assert info.value.record is REF


def test_random_garbage_never_escapes_as_another_exception() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        blob = MAGIC + GOOD[2:HEADER] + bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        with contextlib.suppress(DecodeError):
            serde.decode(blob)


def test_reading_as_an_unrelated_schema_is_a_decode_error() -> None:
    data = serde.encode("sluice.orders.OrderStatus", SAMPLES["sluice.orders.OrderStatus"])
    with pytest.raises(DecodeError, match=r"as sluice\.orders\.OrderPlaced"):
        serde.decode(data, PLACED)


def test_encoding_a_bad_record_names_the_field() -> None:
    bad = {**SAMPLES[PLACED], "total_cents": "12.50"}
    with pytest.raises(EncodeError, match="total_cents"):
        serde.encode(PLACED, bad)


_text = st.text(string.ascii_letters + string.digits + "-_ é", min_size=1, max_size=20)
_lines = st.lists(
    st.fixed_dictionaries(
        {
            "sku": _text,
            "quantity": st.integers(-(2**31), 2**31 - 1),
            "unit_price_cents": st.integers(-(2**63), 2**63 - 1),
        }
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(
    order_id=_text,
    customer=_text,
    lines=_lines,
    total=st.integers(-(2**63), 2**63 - 1),
    ts=st.integers(0, 2**50),
    channel=st.sampled_from(["WEB", "MOBILE", "STORE", "PARTNER"]),
    ref=st.none() | _text,
    currency=st.text(min_size=0, max_size=5),
)
def test_order_placed_round_trips_any_valid_value(
    order_id: str,
    customer: str,
    lines: list,
    total: int,
    ts: int,
    channel: str,
    ref: str | None,
    currency: str,
) -> None:
    record = {
        "order_id": order_id,
        "customer_id": customer,
        "lines": lines,
        "currency": currency,
        "total_cents": total,
        "placed_at": ts,
        "channel": channel,
        "client_ref": ref,
    }
    assert serde.validate(PLACED, record) == []
    assert serde.decode(serde.encode(PLACED, record)) == record


@settings(max_examples=200, deadline=None)
@given(
    params=st.dictionaries(_text, st.text(max_size=30), max_size=5),
    attempt=st.integers(1, 50),
    err=st.none() | st.text(max_size=50),
    channel=st.sampled_from(["EMAIL", "SMS", "PUSH"]),
)
def test_notification_round_trips_any_valid_value(
    params: dict, attempt: int, err: str | None, channel: str
) -> None:
    name = "sluice.notifications.NotificationRequested"
    record = {
        **SAMPLES[name],
        "params": params,
        "attempt": attempt,
        "last_error": err,
        "channel": channel,
    }
    assert serde.decode(serde.encode(name, record)) == record
