"""The wire format: how every Sluice record is written and read, in one place.

Default: Avro single-object encoding (`C3 01`, the writer schema's 8-byte little-endian
CRC-64-AVRO fingerprint, then the binary body). The reader finds the writer's schema by
fingerprint among every version in `schemas/` and resolves it to the newest version
of the schema it wants, so records written by old code replay under new code.

With a schema registry configured: Confluent framing (magic 0, 4-byte schema id) and
the registry as the source of writer schemas, registering ours from `schemas/`.

Records are plain dicts, enums are strings, and timestamp-millis fields are ints (epoch
milliseconds) both ways: schemas are parsed for fastavro without their logicalType
attributes (which the canonical form ignores, so fingerprints are unchanged). Window
arithmetic stays cheap integer maths, records serialise to JSON as they are, and a
replayed record compares equal to the live one with no timezone or rounding drift.

Encoding uses a per-schema compiled encoder (`pipelines.avrogen`) that writes fastavro's
exact bytes about twice as fast as `fastavro.schemaless_writer`; decoding uses
`fastavro.schemaless_reader` with schemas parsed once. Every failure to decode is a
`DecodeError` that carries the record it failed on, so callers can dead-letter it and
carry on; raw fastavro exceptions never escape. What does decode fits its schema: the
one thing fastavro lets through, an `int` beyond 32 bits, is refused as corrupt too
(`pipelines.avroguard`), so a stage never fails later re-encoding what it read.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import fastavro

from pipelines.avrogen import Encoder, compile_encoder
from pipelines.avroguard import Guard, int_guard
from pipelines.errors import RecordError, RecordRef, SluiceError
from pipelines.schemas import (
    SchemaError,
    SchemaStore,
    SchemaVersion,
    default_store,
    strip_logical_types,
)
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

    def decode_with_schema(
        self, data: bytes, reader: str | None = None, *, source: RecordRef | None = None
    ) -> tuple[SchemaVersion, dict[str, Any]]:
        """Like `decode`, and also the schema version the record was written with."""
        ...

    def validate(self, name: str, record: Mapping[str, Any]) -> list[str]:
        """Every problem with `record` under schema `name`; empty when it would encode."""
        ...


class SingleObjectSerde:
    """Avro single-object encoding against the schemas in `schemas/`."""

    def __init__(self, store: SchemaStore | None = None) -> None:
        self.store = store or default_store()
        self._encoders: dict[str, tuple[SchemaVersion, Encoder]] = {}
        self._plans: dict[tuple[bytes, str | None], tuple[SchemaVersion, SchemaVersion | None]] = {}

    def encode(self, name: str, record: Mapping[str, Any], *, topic: str | None = None) -> bytes:
        entry = self._encoders.get(name)
        if entry is None:
            schema = self.store.latest(name)
            entry = (schema, compile_encoder(runtime_schema(schema), MAGIC + schema.fingerprint))
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
        key = (bytes(data[2:HEADER]), reader)
        plan = self._plans.get(key)
        if plan is None:
            writer = self.store.by_fingerprint(key[0])
            if writer is None:
                raise DecodeError(f"unknown schema fingerprint {key[0].hex()}", source)
            plan = self._plans[key] = (writer, reader_for(self.store, writer, reader, source))
        return plan[0], read_body(data, HEADER, plan[0], plan[1], source)

    def validate(self, name: str, record: Mapping[str, Any]) -> list[str]:
        """Every problem with `record`, as "path: reason" lines, for loaders and the intake."""
        return validate_value(self.store.latest(name).raw, record)


def runtime_schema(schema: SchemaVersion) -> dict[str, Any]:
    """The schema as the encoder sees it: logical types off, so timestamps stay ints."""
    stripped: dict[str, Any] = strip_logical_types(schema.raw)
    return stripped


def reader_for(
    store: SchemaStore, writer: SchemaVersion, reader: str | None, source: RecordRef | None
) -> SchemaVersion | None:
    """The version to resolve `writer` to, or None when the writer's own schema will do.

    That is the newest local version of `reader` (default: the writer's name). A writer
    whose name is unknown locally is read as written when no reader was asked for.
    """
    try:
        target = store.latest(reader or writer.name)
    except SchemaError as exc:
        if reader is None:
            return None
        raise DecodeError(str(exc), source) from None
    return None if target.canonical == writer.canonical else target


def encode_error(schema: SchemaVersion, record: Mapping[str, Any], exc: Exception) -> EncodeError:
    """A readable EncodeError: the validator's field-level problems, else the raw cause."""
    problems = validate_value(schema.raw, record) if isinstance(record, Mapping) else []
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
    schema = reader or writer
    guard = _int_guard(schema)
    if guard is not None and not guard(record):
        problems = "; ".join(validate_value(schema.raw, record)[:3])
        raise DecodeError(
            f"corrupt {writer.name} v{writer.version} body: {problems or 'an int beyond 32 bits'}",
            source,
        )
    return record


_INT_GUARDS: dict[str, Guard | None] = {}


def _int_guard(schema: SchemaVersion) -> Guard | None:
    """The schema's int-range guard (see `pipelines.avroguard`), compiled once."""
    try:
        return _INT_GUARDS[schema.canonical]
    except KeyError:
        guard = _INT_GUARDS[schema.canonical] = int_guard(schema.raw)
        return guard


class ConfluentSerde:
    """Confluent framing (magic 0, big-endian schema id) with a schema registry.

    Encoding registers the newest local version under `<topic>-value` (or, without a
    topic, under the record's full name) once per subject and caches the id. Decoding
    fetches the writer schema by id once and resolves it to the newest local version of
    the reader, so old code can read newer records too. `url` may be `mock://...`, the
    client's in-process registry; `client` lets tests share one registry between serdes.
    """

    def __init__(self, url: str, store: SchemaStore | None = None, *, client: Any = None) -> None:
        if client is None:
            # imported here: the registry client pulls in an HTTP and OAuth stack that
            # single-object users never need
            from confluent_kafka.schema_registry import SchemaRegistryClient

            client = SchemaRegistryClient.new_client({"url": url})
        self.store = store or default_store()
        self.client = client
        self._encoders: dict[tuple[str, str], tuple[SchemaVersion, Encoder]] = {}
        self._writers: dict[int, SchemaVersion] = {}
        self._plans: dict[tuple[int, str | None], tuple[SchemaVersion, SchemaVersion | None]] = {}

    def encode(self, name: str, record: Mapping[str, Any], *, topic: str | None = None) -> bytes:
        subject = f"{topic}-value" if topic else name
        entry = self._encoders.get((subject, name))
        if entry is None:
            schema = self.store.latest(name)
            header = b"\x00" + struct.pack(">I", self._register(subject, schema))
            entry = (schema, compile_encoder(runtime_schema(schema), header))
            self._encoders[(subject, name)] = entry
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
        """The writer's schema (the local version when it is one of ours) and the record."""
        if len(data) < 5 or data[0] != 0:
            raise DecodeError(
                f"not Confluent framing (magic byte 0 and a 4-byte schema id; "
                f"got {len(data)} bytes starting {data[:1].hex() or 'nothing'})",
                source,
            )
        schema_id = int.from_bytes(data[1:5], "big")
        plan = self._plans.get((schema_id, reader))
        if plan is None:
            writer = self._writer(schema_id, source)
            plan = (writer, reader_for(self.store, writer, reader, source))
            self._plans[(schema_id, reader)] = plan
        return plan[0], read_body(data, 5, plan[0], plan[1], source)

    def validate(self, name: str, record: Mapping[str, Any]) -> list[str]:
        """Every problem with `record`, as "path: reason" lines, for loaders and the intake."""
        return validate_value(self.store.latest(name).raw, record)

    def _register(self, subject: str, schema: SchemaVersion) -> int:
        from confluent_kafka.schema_registry import Schema

        try:
            schema_id = self.client.register_schema(subject, Schema(json.dumps(schema.raw), "AVRO"))
        except Exception as exc:  # registry client errors: HTTP, auth, incompatibility
            raise EncodeError(
                f"schema registry refused {schema.name} under {subject}: {exc}"
            ) from None
        return int(schema_id)

    def _writer(self, schema_id: int, source: RecordRef | None) -> SchemaVersion:
        """The writer schema of an id, fetched once; our own SchemaVersion when it is ours."""
        cached = self._writers.get(schema_id)
        if cached is not None:
            return cached
        try:
            raw = json.loads(self.client.get_schema(schema_id).schema_str or "")
            fetched = SchemaVersion.from_raw(raw, 0, Path(f"registry:{schema_id}"))
        except Exception as exc:  # unknown id, registry down, not JSON, not a record
            raise DecodeError(
                f"schema id {schema_id} not available from the registry: {exc}", source
            ) from None
        local = self.store.by_fingerprint(fetched.fingerprint)
        writer = local if local is not None and local.name == fetched.name else fetched
        self._writers[schema_id] = writer
        return writer


def serde_for(settings: Settings) -> Serde:
    """Confluent framing when a schema registry is configured, else single-object encoding."""
    if settings.schema_registry_url:
        return ConfluentSerde(settings.schema_registry_url)
    return SingleObjectSerde()
