"""The wire format: how every Sluice record is written and read, in one place.

Default: Avro single-object encoding (`C3 01`, the writer schema's 8-byte little-endian
CRC-64-AVRO fingerprint, then the binary body). The reader finds the writer's schema by
fingerprint among every version in `schemas/` and resolves it to the newest version
of the schema it wants, so records written by old code replay under new code.

With a schema registry configured: Confluent framing (magic 0, 4-byte schema id) and
the registry as the source of writer schemas, registering ours from `schemas/`.

Every failure to decode is a `DecodeError` that carries the record it failed on, so
callers can dead-letter it and carry on; raw fastavro exceptions never escape.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from typing import Any, Protocol

import fastavro

from pipelines.avrogen import Encoder, compile_encoder
from pipelines.errors import RecordError, RecordRef, SluiceError
from pipelines.schemas import SchemaStore, SchemaVersion, default_store, strip_logical_types
from pipelines.settings import Settings
from pipelines.validation import validate as validate_value

MAGIC = b"\xc3\x01"
HEADER = len(MAGIC) + 8


class DecodeError(RecordError):
    """Bytes that are not a readable Sluice record (bad magic, unknown schema, bad body)."""


class EncodeError(SluiceError):
    """A record that does not fit its schema."""


class Serde(Protocol):
    """What producers, Faust agents and consumers need from a wire format."""

    def encode(self, name: str, record: Mapping[str, Any], *, topic: str | None = None) -> bytes:
        """Bytes for `record` written with the newest version of schema `name`."""
        ...

    def decode(
        self, data: bytes, reader: str | None = None, *, source: RecordRef | None = None
    ) -> dict[str, Any]:
        """The record in `data`, resolved to the newest version of `reader` (or its own name)."""
        ...

    def validate(self, name: str, record: Mapping[str, Any]) -> list[str]:
        """Every problem with `record` under schema `name`; empty when it would encode."""
        ...


class SingleObjectSerde:
    """Avro single-object encoding against the schemas in `schemas/`."""

    def __init__(self, store: SchemaStore | None = None) -> None:
        self.store = store or default_store()
        self._encoders: dict[str, tuple[SchemaVersion, Encoder]] = {}

    def encode(self, name: str, record: Mapping[str, Any], *, topic: str | None = None) -> bytes:
        entry = self._encoders.get(name)
        if entry is None:
            schema = self.store.latest(name)
            entry = (
                schema,
                compile_encoder(strip_logical_types(schema.raw), MAGIC + schema.fingerprint),
            )
            self._encoders[name] = entry
        try:
            return entry[1](record)
        except Exception as exc:  # any mismatch between record and schema surfaces here
            raise encode_error(entry[0], record, exc) from None

    def decode(
        self, data: bytes, reader: str | None = None, *, source: RecordRef | None = None
    ) -> dict[str, Any]:
        return self.decode_with_schema(data, reader, source=source)[1]

    def decode_with_schema(
        self, data: bytes, reader: str | None = None, *, source: RecordRef | None = None
    ) -> tuple[SchemaVersion, dict[str, Any]]:
        """The writer's schema version and the decoded record."""
        if len(data) < HEADER:
            raise DecodeError(
                f"record too short for single-object encoding ({len(data)} bytes)", source
            )
        if data[:2] != MAGIC:
            raise DecodeError(
                f"not Avro single-object encoding (starts {data[:2].hex()}, expected c301)", source
            )
        writer = self.store.by_fingerprint(data[2:HEADER])
        if writer is None:
            raise DecodeError(f"unknown schema fingerprint {data[2:HEADER].hex()}", source)
        return writer, read_body(data, HEADER, writer, self._reader(writer, reader, source), source)

    def validate(self, name: str, record: Mapping[str, Any]) -> list[str]:
        return validate_value(self.store.latest(name).raw, record)

    def _reader(
        self, writer: SchemaVersion, reader: str | None, source: RecordRef | None
    ) -> SchemaVersion | None:
        if reader is None or reader == writer.name:
            latest = self.store.latest(writer.name)
            return None if latest.version == writer.version else latest
        try:
            return self.store.latest(reader)
        except SluiceError as exc:
            raise DecodeError(str(exc), source) from None


def encode_error(schema: SchemaVersion, record: Mapping[str, Any], exc: Exception) -> EncodeError:
    """A readable EncodeError: the validator's field-level problems, else the raw cause."""
    problems = validate_value(schema.raw, record)
    detail = "; ".join(problems[:5]) if problems else f"{type(exc).__name__}: {exc}"
    return EncodeError(f"record does not fit {schema.name} v{schema.version}: {detail}")


def read_body(
    data: bytes,
    offset: int,
    writer: SchemaVersion,
    reader: SchemaVersion | None,
    source: RecordRef | None,
) -> dict[str, Any]:
    """Decode the Avro body at `offset`, resolving writer to reader; all of it must be used."""
    body = io.BytesIO(data)
    body.seek(offset)
    try:
        record = fastavro.schemaless_reader(body, writer.parsed, reader.parsed if reader else None)
    except Exception as exc:  # truncated or corrupt bodies surface as many exception types
        target = f" as {reader.name} v{reader.version}" if reader else ""
        raise DecodeError(
            f"cannot decode body written with {writer.name} v{writer.version}{target}: "
            f"{type(exc).__name__}: {exc}",
            source,
        ) from None
    if body.tell() != len(data):
        raise DecodeError(
            f"{len(data) - body.tell()} trailing bytes after a {writer.name} "
            f"v{writer.version} body",
            source,
        )
    if not isinstance(record, dict):
        raise DecodeError(f"{writer.name} did not decode to a record", source)
    return record


class ConfluentSerde:
    """Confluent framing with schema ids from a schema registry (SCHEMA_REGISTRY_URL)."""

    def __init__(self, url: str, store: SchemaStore | None = None) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.store = store or default_store()
        self.client = SchemaRegistryClient.new_client({"url": url})
        self._encoders: dict[tuple[str, str], Encoder] = {}
        self._writers: dict[int, SchemaVersion] = {}
        self._local = SingleObjectSerde(self.store)

    def encode(self, name: str, record: Mapping[str, Any], *, topic: str | None = None) -> bytes:
        schema = self.store.latest(name)
        subject = f"{topic}-value" if topic else name
        encoder = self._encoders.get((subject, name))
        if encoder is None:
            header = b"\x00" + struct.pack(">I", self._register(subject, schema))
            encoder = compile_encoder(strip_logical_types(schema.raw), header)
            self._encoders[(subject, name)] = encoder
        try:
            return encoder(record)
        except Exception as exc:  # any mismatch between record and schema surfaces here
            raise encode_error(schema, record, exc) from None

    def decode(
        self, data: bytes, reader: str | None = None, *, source: RecordRef | None = None
    ) -> dict[str, Any]:
        if len(data) < 5 or data[0] != 0:
            raise DecodeError("not Confluent framing (magic byte 0 and a 4-byte schema id)", source)
        schema_id = struct.unpack(">I", data[1:5])[0]
        writer = self._writer(schema_id, source)
        target = self.store.latest(reader or writer.name)
        resolved = None if target.canonical == writer.canonical else target
        return read_body(data, 5, writer, resolved, source)

    def validate(self, name: str, record: Mapping[str, Any]) -> list[str]:
        return self._local.validate(name, record)

    def _register(self, subject: str, schema: SchemaVersion) -> int:
        from confluent_kafka.schema_registry import Schema

        try:
            schema_id = int(
                self.client.register_schema(subject, Schema(json.dumps(schema.raw), "AVRO"))
            )
        except Exception as exc:  # registry client errors: HTTP, auth, incompatibility
            raise EncodeError(
                f"schema registry refused {schema.name} under {subject}: {exc}"
            ) from None
        return schema_id

    def _writer(self, schema_id: int, source: RecordRef | None) -> SchemaVersion:
        cached = self._writers.get(schema_id)
        if cached is not None:
            return cached
        try:
            text = self.client.get_schema(schema_id).schema_str
            raw = json.loads(text or "")
        except Exception as exc:  # unknown id, registry down, not JSON
            raise DecodeError(
                f"schema id {schema_id} not available from the registry: {exc}", source
            ) from None
        writer = _version_from_raw(raw, schema_id)
        self._writers[schema_id] = writer
        return writer


def _version_from_raw(raw: dict[str, Any], schema_id: int) -> SchemaVersion:
    from pathlib import Path

    from fastavro.schema import to_parsing_canonical_form

    from pipelines.schemas import crc64_avro

    canonical = to_parsing_canonical_form(raw)
    full = f"{raw['namespace']}.{raw['name']}" if raw.get("namespace") else raw["name"]
    parsed = fastavro.parse_schema(strip_logical_types(raw), named_schemas={})
    fp = crc64_avro(canonical.encode()).to_bytes(8, "little")
    return SchemaVersion(full, 0, Path(f"registry:{schema_id}"), raw, canonical, fp, parsed)


def serde_for(settings: Settings) -> Serde:
    """Confluent framing when a schema registry is configured, else single-object encoding."""
    if settings.schema_registry_url:
        return ConfluentSerde(settings.schema_registry_url)
    return SingleObjectSerde()
