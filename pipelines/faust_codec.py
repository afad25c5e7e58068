"""A Faust codec per Sluice schema, so agents can read and write records natively.

`register_codecs()` makes `value_serializer="avro:sluice.orders.OrderPlaced"` work on any
Faust topic: values are plain dicts in the newest version's shape, timestamps as epoch
millis, exactly as `pipelines.serde` gives them.

A codec that cannot decode raises `DecodeError`; Faust wraps it in `ValueDecodeError`,
logs it and skips the record, so the bytes are gone from the agent's point of view. The
pipeline's own stages therefore read raw bytes and decode with `pipelines.serde`
themselves, sending an undecodable record to a DLQ with its reason. The codec is for
tools and user agents where log-and-skip is acceptable.
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from pipelines.schemas import default_store
from pipelines.serde import Serde, SingleObjectSerde

PREFIX = "avro:"


class AvroCodec(codecs.Codec):
    """Encodes dicts as Avro of one schema; decodes any known version to its newest shape."""

    def __init__(self, schema_name: str, serde: Serde | None = None, **kwargs: Any) -> None:
        self.schema_name = schema_name
        self.serde: Serde = serde or SingleObjectSerde()
        # kept in kwargs so Faust's clone() (used by `codec | other`) keeps both
        super().__init__(schema_name=schema_name, serde=self.serde, **kwargs)

    def _dumps(self, obj: Any) -> bytes:
        return self.serde.encode(self.schema_name, obj)

    def _loads(self, s: bytes) -> Any:
        return self.serde.decode(s, self.schema_name)


def codec_name(schema_name: str) -> str:
    """The registry key of a schema's codec."""
    return PREFIX + schema_name


def register_codecs(serde: Serde | None = None) -> list[str]:
    """Register one codec per schema in `schemas/`; returns their names.

    Idempotent: without `serde`, codecs already registered stay as they are (a shared
    single-object serde backs new ones). Passing a serde, e.g. `serde_for(settings)` for
    Confluent framing, replaces them all. Through a codec, Confluent subjects are the
    record's full name, since a codec is not told its topic.
    """
    shared = serde or SingleObjectSerde()
    names = []
    for schema_name in default_store().names():
        name = codec_name(schema_name)
        if serde is not None or name not in codecs.codecs:
            codecs.register(name, AvroCodec(schema_name, shared))
        names.append(name)
    return names
