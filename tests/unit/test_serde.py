from __future__ import annotations

import contextlib
import io
import json
import random
import string
from typing import Any

import avro.io
import avro.schema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.errors import RecordRef
from pipelines.schemas import SchemaStore, SchemaVersion, default_store, schemas_dir
from pipelines.serde import (
    HEADER,
    MAGIC,
    ConfluentSerde,
    DecodeError,
    EncodeError,
    SingleObjectSerde,
    read_body,
    serde_for,
)
from pipelines.settings import Settings
from tests.support.registry import schema_registry
from tests.unit.samples import LINE, SAMPLES

PLACED = "sluice.orders.OrderPlaced"
serde = SingleObjectSerde()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_single_object_round_trip(name: str) -> None:
    data = serde.encode(name, SAMPLES[name])
    assert data[:2] == MAGIC
    assert data[2:HEADER] == default_store().latest(name).fingerprint
    assert serde.decode(data) == SAMPLES[name]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_confluent_framing_round_trip(name: str) -> None:
    confluent = ConfluentSerde("mock://sluice")
    data = confluent.encode(name, SAMPLES[name], topic="some.topic")
    assert data[0] == 0
    writer, decoded = confluent.decode_with_schema(data)
    assert decoded == SAMPLES[name]
    assert writer is default_store().latest(name)  # the registry's copy maps to ours


def test_confluent_framing_over_real_http() -> None:
    with schema_registry() as url:
        data = ConfluentSerde(url).encode(PLACED, SAMPLES[PLACED], topic="orders.placed")
        assert ConfluentSerde(url).decode(data) == SAMPLES[PLACED]  # a fresh client fetches


def test_confluent_subject_is_topic_value() -> None:
    confluent = ConfluentSerde("mock://sluice")
    data = confluent.encode(PLACED, SAMPLES[PLACED], topic="orders.placed")
    registered = confluent.client.get_latest_version("orders.placed-value")
    assert registered.schema_id == int.from_bytes(data[1:5], "big")


def test_registry_serde_is_chosen_by_settings() -> None:
    assert isinstance(serde_for(Settings(schema_registry_url="mock://x")), ConfluentSerde)
    assert isinstance(serde_for(Settings()), SingleObjectSerde)


def _v1_only_store() -> SchemaStore:
    """The schemas as code from before v2 knew them."""
    return SchemaStore([SchemaVersion.from_file(schemas_dir() / "OrderPlaced.v1.avsc")])


V1_RECORD = {k: v for k, v in SAMPLES[PLACED].items() if k != "client_ref"}


def test_v1_records_read_as_v2_with_the_default() -> None:
    data = SingleObjectSerde(_v1_only_store()).encode(PLACED, V1_RECORD)
    writer, decoded = serde.decode_with_schema(data)
    assert writer.version == 1
    assert decoded == {**V1_RECORD, "client_ref": None}


def test_v2_records_read_as_v1() -> None:
    data = serde.encode(PLACED, SAMPLES[PLACED])
    # single-object readers find writers by fingerprint, so v1-only code cannot: replaying
    # new records needs the newer schema file, which `schemas/` always keeps
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        SingleObjectSerde(_v1_only_store()).decode(data)
    v1, v2 = (default_store().get(PLACED, n) for n in (1, 2))
    assert read_body(data, HEADER, v2, v1, None) == V1_RECORD


def test_confluent_v1_code_reads_v2_records_through_the_registry() -> None:
    new = ConfluentSerde("mock://sluice")
    old = ConfluentSerde("mock://sluice", _v1_only_store(), client=new.client)
    data = new.encode(PLACED, SAMPLES[PLACED], topic="orders.placed")
    writer, decoded = old.decode_with_schema(data)
    assert (writer.name, decoded) == (PLACED, V1_RECORD)
    assert new.decode(old.encode(PLACED, V1_RECORD, topic="orders.placed")) == {
        **V1_RECORD,
        "client_ref": None,
    }


def test_timestamps_are_epoch_millis_ints_both_ways() -> None:
    decoded = serde.decode(serde.encode(PLACED, SAMPLES[PLACED]))
    assert type(decoded["placed_at"]) is int
    assert decoded["placed_at"] == SAMPLES[PLACED]["placed_at"]


def test_apache_avro_decodes_what_fastavro_encodes() -> None:
    for name, record in SAMPLES.items():
        data = serde.encode(name, record)
        schema = avro.schema.parse(json.dumps(default_store().latest(name).raw))
        decoded = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(data[HEADER:])))
        for key, value in record.items():
            assert _millis(decoded[key]) == value, (name, key)


def _millis(value: Any) -> Any:
    """The avro library hands out datetimes, nested ones too: epoch millis, as ours."""
    if hasattr(value, "timestamp"):
        return round(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: _millis(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_millis(v) for v in value]
    return value


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
        (random.Random(7).randbytes(64), "not Avro single-object"),
        (MAGIC + GOOD[2:HEADER] + b"\x06abc\x02x\xff\xff\xff\xff\xff", "cannot decode body"),
    ],
    ids=["empty", "short", "magic", "fingerprint", "truncated", "trailing", "random", "garbled"],
)
def test_bad_bytes_raise_one_typed_error_with_the_record(data: bytes, needle: str) -> None:
    with pytest.raises(DecodeError, match=needle) as info:
        serde.decode(data, PLACED, source=REF)
    assert info.value.record is REF
    assert "\n" not in str(info.value)


CONFLUENT = ConfluentSerde("mock://bad-bytes")
GOOD_CONFLUENT = CONFLUENT.encode(PLACED, SAMPLES[PLACED], topic="orders.placed")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "not Confluent framing"),
        (b"\x00\x00\x00", "not Confluent framing"),
        (GOOD, "not Confluent framing"),
        (b"\x00\x00\x00\x7f\xff" + GOOD_CONFLUENT[5:], "schema id 32767 not available"),
        (GOOD_CONFLUENT[:-4], "cannot decode body"),
        (GOOD_CONFLUENT + b"\x00", "trailing bytes"),
        (b"\x00" + GOOD_CONFLUENT[1:5] + random.Random(3).randbytes(3), "cannot decode body"),
    ],
    ids=["empty", "short", "magic", "unknown-id", "truncated", "trailing", "random-body"],
)
def test_confluent_bad_bytes_raise_one_typed_error_with_the_record(
    data: bytes, needle: str
) -> None:
    with pytest.raises(DecodeError, match=needle) as info:
        CONFLUENT.decode(data, PLACED, source=REF)
    assert info.value.record is REF


@pytest.mark.parametrize("codec", [serde, CONFLUENT], ids=["single-object", "confluent"])
def test_unknown_reader_is_a_decode_error(codec: SingleObjectSerde | ConfluentSerde) -> None:
    data = codec.encode(PLACED, SAMPLES[PLACED], topic="orders.placed")
    with pytest.raises(DecodeError, match=r"unknown schema 'sluice\.Nope'") as info:
        codec.decode(data, "sluice.Nope", source=REF)
    assert info.value.record is REF


def test_random_garbage_never_escapes_as_another_exception() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        blob = MAGIC + GOOD[2:HEADER] + bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        with contextlib.suppress(DecodeError):
            serde.decode(blob)


Codec = SingleObjectSerde | ConfluentSerde


def _decodes_to_a_valid_record_or_raises_decode_error(codec: Codec, data: bytes, name: str) -> None:
    """The decoder's contract on any input: a record that fits the schema (so a stage can
    re-encode what it read), or a one-line DecodeError that keeps the source record.
    Any other exception fails the test by propagating."""
    try:
        record = codec.decode(data, name, source=REF)
    except DecodeError as exc:
        error = exc
    else:
        assert codec.validate(name, record) == []
        return
    assert error.record is REF
    assert "\n" not in str(error)


@st.composite
def _mutated(draw: st.DrawFn, good: bytes, header: int) -> bytes:
    """`good` with one to four byte-level mutations of its body (flip, truncate, extend,
    insert, delete); the header stays intact, so the damage gets past the magic and
    schema lookup and reaches the Avro body decoder."""
    data = bytearray(good)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "extend", "insert", "delete"]))
        end = len(data)
        if op == "flip" and end > header:
            data[draw(st.integers(header, end - 1))] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[draw(st.integers(header, end)) :]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=16))
        elif op == "insert":
            at = draw(st.integers(header, end))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and end > header:
            at = draw(st.integers(header, end - 1))
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=200).map(lambda body: GOOD[:HEADER] + body),
        st.binary(max_size=200).map(lambda body: GOOD_CONFLUENT[:5] + body),
    )
)
@pytest.mark.parametrize("codec", [serde, CONFLUENT], ids=["single-object", "confluent"])
def test_random_bytes_only_ever_raise_decode_error(codec: Codec, data: bytes) -> None:
    _decodes_to_a_valid_record_or_raises_decode_error(codec, data, PLACED)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_mutated_valid_records_only_ever_raise_decode_error(name: str, data: st.DataObject) -> None:
    good = serde.encode(name, SAMPLES[name])
    blob = data.draw(_mutated(good, HEADER), label="mutated")
    _decodes_to_a_valid_record_or_raises_decode_error(serde, blob, name)


@settings(max_examples=300, deadline=None)
@given(blob=_mutated(GOOD_CONFLUENT, 5))
def test_mutated_confluent_records_only_ever_raise_decode_error(blob: bytes) -> None:
    _decodes_to_a_valid_record_or_raises_decode_error(CONFLUENT, blob, PLACED)


def test_reading_as_an_unrelated_schema_is_a_decode_error() -> None:
    data = serde.encode("sluice.orders.OrderStatus", SAMPLES["sluice.orders.OrderStatus"])
    with pytest.raises(DecodeError, match=r"as sluice\.orders\.OrderPlaced"):
        serde.decode(data, PLACED)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"total_cents": "12.50"}, "total_cents: must be an integer"),
        ({"total_cents": 12.5}, "total_cents: must be an integer"),
        ({"channel": "FAX"}, "channel: must be one of WEB"),
        ({"lines": [{**LINE, "quantity": 2**31}]}, r"lines\[0\]\.quantity: .* out of range"),
        ({"lines": [{"sku": "a", "quantity": 1}]}, r"lines\[0\]\.unit_price_cents: required"),
        ({"client_ref": 7}, "client_ref: must be one of: null, string"),
        ({"order_id": None}, "order_id: must be string"),
    ],
)
@pytest.mark.parametrize("codec", [serde, CONFLUENT], ids=["single-object", "confluent"])
def test_encoding_a_bad_record_names_the_field(
    codec: SingleObjectSerde | ConfluentSerde, change: dict[str, object], needle: str
) -> None:
    with pytest.raises(EncodeError, match=needle):
        codec.encode(PLACED, {**SAMPLES[PLACED], **change}, topic="orders.placed")


def test_encoding_a_missing_field_or_a_non_record_is_an_encode_error() -> None:
    incomplete = {k: v for k, v in SAMPLES[PLACED].items() if k != "currency"}
    with pytest.raises(EncodeError, match="currency: required field is missing"):
        serde.encode(PLACED, incomplete)
    with pytest.raises(EncodeError, match=r"does not fit sluice\.orders\.OrderPlaced v2"):
        serde.encode(PLACED, ["not", "a", "record"])  # type: ignore[arg-type]


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
