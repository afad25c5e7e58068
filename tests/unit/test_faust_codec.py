from __future__ import annotations

import pytest
from faust.serializers import codecs

from pipelines.faust_codec import codec_name, register_codecs
from pipelines.serde import DecodeError
from tests.unit.samples import SAMPLES


def test_every_schema_gets_a_codec_idempotently() -> None:
    first = register_codecs()
    assert register_codecs() == first
    assert len(first) == len(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_codec_round_trip(name: str) -> None:
    register_codecs()
    codec = codecs.get_codec(codec_name(name))
    data = codec.dumps(SAMPLES[name])
    assert data[:2] == b"\xc3\x01"
    assert codec.loads(data) == SAMPLES[name]


def test_codec_raises_on_garbage() -> None:
    register_codecs()
    with pytest.raises(DecodeError):
        codecs.get_codec(codec_name("sluice.orders.OrderPlaced")).loads(b"garbage!!garbage")
