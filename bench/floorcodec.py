"""The floor bench's transform: decode an OrderPlaced, change it a little, encode it again.

Every contender of the transform rounds in `bench.faust_floor` (the Faust agent, Quix
Streams, the bare aiokafka and confluent-kafka loops) calls this same `OrderCodec.transform`
on each record, so the rounds differ only in the framework around it. It needs nothing but
fastavro and the schema file in `schemas/`: the Quix Streams contender imports it from a
venv of its own, which cannot install Sluice (Quix pins an older confluent-kafka).

The bytes are Sluice's wire format, Avro single-object encoding (`C3 01`, the schema's
CRC-64-AVRO fingerprint, the body), read and written with fastavro's schemaless calls and
timestamps kept as epoch milliseconds, as `pipelines.serde` does; a unit test pins that
both write the same bytes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schemas" / "OrderPlaced.v2.avsc"


def without_logical_types(schema: Any) -> Any:
    """A copy of `schema` without logicalType, so timestamp-millis fields stay plain ints."""
    if isinstance(schema, dict):
        return {k: without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [without_logical_types(v) for v in schema]
    return schema


def discount(order: dict[str, Any], percent: int = 10) -> dict[str, Any]:
    """The order with `percent` off every unit price and its total recomputed.

    A small change of the kind a stage makes: it touches nested records and keeps the
    order valid (the total still equals the sum of its lines).
    """
    lines = [
        {**line, "unit_price_cents": line["unit_price_cents"] * (100 - percent) // 100}
        for line in order["lines"]
    ]
    total = sum(line["quantity"] * line["unit_price_cents"] for line in lines)
    return {**order, "lines": lines, "total_cents": total}


class OrderCodec:
    """OrderPlaced records in single-object encoding, written with the file's schema."""

    def __init__(self, path: Path = SCHEMA_FILE) -> None:
        raw = json.loads(path.read_text())
        canonical = to_parsing_canonical_form(raw)
        self.header = MAGIC + bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        self.schema = fastavro.parse_schema(without_logical_types(raw))

    def decode(self, data: bytes) -> dict[str, Any]:
        """The record in `data`, which must carry this schema's header."""
        if data[: len(self.header)] != self.header:
            raise ValueError(f"not an OrderPlaced v2 record (starts {data[:10].hex()})")
        body = io.BytesIO(data)
        body.seek(len(self.header))
        record: dict[str, Any] = fastavro.schemaless_reader(body, self.schema, None)
        return record

    def encode(self, record: dict[str, Any]) -> bytes:
        """`record` with the header, in Sluice's wire format."""
        out = io.BytesIO()
        out.write(self.header)
        fastavro.schemaless_writer(out, self.schema, record)
        return out.getvalue()

    def transform(self, data: bytes) -> bytes:
        """What every transform contender does per record: decode, discount, encode."""
        return self.encode(discount(self.decode(data)))
