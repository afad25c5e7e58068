"""A Faust codec per Sluice schema, so agents can read and write records natively.

`register_codecs()` makes `value_serializer="avro:sluice.orders.OrderPlaced"` work on any
Faust topic. A codec that cannot decode raises, and Faust then logs and skips the
record; the pipeline's stages therefore read raw bytes and decode with `pipelines.serde`
themselves, so an undecodable record goes to a DLQ with its reason instead. The codec is
for tools and user agents where that trade-off is acceptable.
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from pipelines.schemas import default_store
from pipelines.serde import Serde, SingleObjectSerde

PREFIX = "avro:"


class AvroCodec(codecs.Codec):
    """Encodes dicts as single-object Avro of one schema; decodes to that schema's newest shape."""

    def __init__(self, schema_name: str, serde: Serde | None = None, **kwargs: Any) -> None:
        super().__init__(schema_name=schema_name, **kwargs)
        self.schema_name = schema_name
        self.serde = serde or SingleObjectSerde()

    def _dumps(self, obj: Any) -> bytes:
        return self.serde.encode(self.schema_name, obj)

    def _loads(self, s: bytes) -> Any:
        return self.serde.decode(s, self.schema_name)


def codec_name(schema_name: str) -> str:
    """The registry key of a schema's codec."""
    return PREFIX + schema_name


def register_codecs() -> list[str]:
    """Register one codec per schema in `schemas/` (idempotent); returns their names."""
    serde = SingleObjectSerde()
    names = []
    for schema_name in default_store().names():
        name = codec_name(schema_name)
        if name not in codecs.codecs:
            codecs.register(name, AvroCodec(schema_name, serde))
        names.append(name)
    return names
