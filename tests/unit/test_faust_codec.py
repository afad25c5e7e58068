from __future__ import annotations

import pytest
from faust.exceptions import ValueDecodeError
from faust.serializers import codecs
from faust.serializers.registry import Registry

from pipelines.faust_codec import AvroCodec, codec_name, register_codecs
from pipelines.schemas import SchemaStore, SchemaVersion, schemas_dir
from pipelines.serde import ConfluentSerde, DecodeError, SingleObjectSerde
from tests.unit.samples import SAMPLES

PLACED = "sluice.orders.OrderPlaced"


def test_every_schema_gets_a_codec_idempotently() -> None:
    first = register_codecs()
    codec = codecs.get_codec(codec_name(PLACED))
    assert register_codecs() == first
    assert codecs.get_codec(codec_name(PLACED)) is codec
    assert sorted(first) == sorted(codec_name(n) for n in SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_codec_round_trip(name: str) -> None:
    register_codecs()
    codec = codecs.get_codec(codec_name(name))
    data = codec.dumps(SAMPLES[name])
    assert data[:2] == b"\xc3\x01"
    assert codec.loads(data) == SAMPLES[name]


def test_codec_raises_on_garbage() -> None:
    register_codecs()
    with pytest.raises(DecodeError, match="not Avro single-object"):
        codecs.get_codec(codec_name(PLACED)).loads(b"garbage!!garbage")


def test_faust_serializer_registry_uses_the_codec_by_name() -> None:
    """What a Faust topic with value_serializer="avro:..." does, without a broker."""
    register_codecs()
    registry = Registry(value_serializer=codec_name(PLACED))
    data = registry.dumps_value(None, SAMPLES[PLACED])
    assert isinstance(data, bytes)
    assert registry.loads_value(None, data) == SAMPLES[PLACED]
    with pytest.raises(ValueDecodeError, match="unknown schema fingerprint"):
        registry.loads_value(None, b"\xc3\x01" + b"\x00" * 12)


def test_a_codec_reads_older_versions_in_the_newest_shape() -> None:
    v1_only = SchemaStore([SchemaVersion.from_file(schemas_dir() / "OrderPlaced.v1.avsc")])
    v1 = {k: v for k, v in SAMPLES[PLACED].items() if k != "client_ref"}
    data = SingleObjectSerde(v1_only).encode(PLACED, v1)
    assert AvroCodec(PLACED).loads(data) == {**v1, "client_ref": None}


def test_chained_codecs_keep_schema_and_serde() -> None:
    serde = SingleObjectSerde()
    chained = AvroCodec(PLACED, serde) | codecs.get_codec("binary")
    assert isinstance(chained, AvroCodec)
    assert chained.serde is serde
    assert chained.loads(chained.dumps(SAMPLES[PLACED])) == SAMPLES[PLACED]


def test_registering_with_a_serde_replaces_the_codecs() -> None:
    confluent = ConfluentSerde("mock://codecs")
    try:
        register_codecs(confluent)
        data = codecs.get_codec(codec_name(PLACED)).dumps(SAMPLES[PLACED])
        assert data[0] == 0  # Confluent framing
        assert confluent.client.get_latest_version(PLACED).schema_id == int.from_bytes(
            data[1:5], "big"
        )
    finally:
        register_codecs(SingleObjectSerde())
    assert codecs.get_codec(codec_name(PLACED)).dumps(SAMPLES[PLACED])[:2] == b"\xc3\x01"
