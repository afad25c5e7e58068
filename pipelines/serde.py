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


class RegistryUnavailable(SluiceError):
    """The schema registry did not answer (down, unreachable, timing out, failing).

    A fault that passes: the record waiting for it is fine, so it is retried, never
    dead-lettered. Only a registry that answers "no such schema id" makes a record poison.
    """

    retriable = True


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

    def missing_schema(self, data: bytes | None) -> int | None:
        """The registry schema id `data` needs and this serde has not fetched yet, if any.

        Cheap (no I/O): stages call it per record to decide whether to fetch first, off
        the event loop, before the synchronous `decode`.
        """
        ...

    def fetch_schema(self, schema_id: int) -> None:
        """Fetch one writer schema (blocking I/O: run it in a thread).

        Raises `RegistryUnavailable` when the registry does not answer; an id the registry
        says it does not have is remembered, and the next `decode` of it is a DecodeError.
        """
        ...

    def prepare(self, outputs: list[tuple[str, str]]) -> None:
        """Make ready to encode (schema name, physical topic) pairs (blocking: a thread).

        Raises `RegistryUnavailable` when a registry is needed and does not answer.
        """
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

    def missing_schema(self, data: bytes | None) -> int | None:
        """Never: every writer schema is a local file."""
        return None

    def fetch_schema(self, schema_id: int) -> None:
        """Nothing to fetch: there is no registry."""

    def prepare(self, outputs: list[tuple[str, str]]) -> None:
        """Nothing to prepare: encoders are compiled on first use from local files."""


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

    A registry that does not answer raises `RegistryUnavailable` (retriable); only an
    answer "no such schema id" makes a record undecodable (`DecodeError`). Stages never
    call the registry from the event loop: they ask `missing_schema` per record and run
    `fetch_schema` (and `prepare`, for their outputs) in a thread first.
    """

    def __init__(
        self,
        url: str,
        store: SchemaStore | None = None,
        *,
        client: Any = None,
        client_retries: int | None = None,
    ) -> None:
        if client is None:
            # imported here: the registry client pulls in an HTTP and OAuth stack that
            # single-object users never need
            from confluent_kafka.schema_registry import SchemaRegistryClient

            conf: dict[str, Any] = {"url": url, "timeout": REGISTRY_TIMEOUT_S}
            if client_retries is not None:  # stages retry themselves, off the event loop
                conf["max.retries"] = client_retries
            client = SchemaRegistryClient.new_client(conf)
        self.store = store or default_store()
        self.client = client
        self._encoders: dict[tuple[str, str], tuple[SchemaVersion, Encoder]] = {}
        self._writers: dict[int, SchemaVersion] = {}
        self._unknown: dict[int, str] = {}  # ids the registry said it does not have
        self._plans: dict[tuple[int, str | None], tuple[SchemaVersion, SchemaVersion | None]] = {}

    def encode(self, name: str, record: Mapping[str, Any], *, topic: str | None = None) -> bytes:
        subject = f"{topic}-value" if topic else name
        entry = self._encoders.get((subject, name)) or self._encoder(subject, name)
        try:
            return entry[1](record)
        except Exception as exc:  # any mismatch between record and schema surfaces here
            raise encode_error(entry[0], record, exc) from None

    def _encoder(self, subject: str, name: str) -> tuple[SchemaVersion, Encoder]:
        schema = self.store.latest(name)
        schema_id = self._register(subject, schema)
        header = b"\x00" + struct.pack(">I", schema_id)
        entry = self._encoders[(subject, name)] = (
            schema,
            compile_encoder(runtime_schema(schema), header),
        )
        self._writers.setdefault(schema_id, schema)  # what we registered, we can read
        return entry

    def prepare(self, outputs: list[tuple[str, str]]) -> None:
        for name, topic in outputs:
            if (f"{topic}-value", name) not in self._encoders:
                self._encoder(f"{topic}-value", name)

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

    def missing_schema(self, data: bytes | None) -> int | None:
        if not data or len(data) < 5 or data[0] != 0:
            return None  # not framed: decode says so without the registry
        schema_id = int.from_bytes(data[1:5], "big")
        if schema_id in self._writers or schema_id in self._unknown:
            return None
        return schema_id

    def fetch_schema(self, schema_id: int) -> None:
        if schema_id in self._writers:
            return
        try:
            self._writers[schema_id] = self._fetch(schema_id)
        except DecodeError as exc:  # the registry answered: this id is poison
            self._unknown[schema_id] = str(exc)

    def _register(self, subject: str, schema: SchemaVersion) -> int:
        from confluent_kafka.schema_registry import Schema

        try:
            schema_id = self.client.register_schema(subject, Schema(json.dumps(schema.raw), "AVRO"))
        except Exception as exc:  # registry client errors: HTTP, auth, incompatibility
            if _registry_refused(exc):
                raise EncodeError(
                    f"schema registry refused {schema.name} under {subject}: {exc}"
                ) from None
            raise RegistryUnavailable(
                f"schema registry unavailable, cannot register {schema.name} under "
                f"{subject}: {_brief(exc)}"
            ) from None
        return int(schema_id)

    def _writer(self, schema_id: int, source: RecordRef | None) -> SchemaVersion:
        """The writer schema of an id, fetched once; our own SchemaVersion when it is ours."""
        cached = self._writers.get(schema_id)
        if cached is not None:
            return cached
        unknown = self._unknown.pop(schema_id, None)  # asked again next time: it may appear
        if unknown is not None:
            raise DecodeError(unknown, source)
        try:
            writer = self._writers[schema_id] = self._fetch(schema_id)
        except DecodeError as exc:
            raise DecodeError(str(exc), source) from None
        return writer

    def _fetch(self, schema_id: int) -> SchemaVersion:
        """One registry look-up: DecodeError when the registry says no, else unavailable."""
        try:
            registered = self.client.get_schema(schema_id)
        except Exception as exc:  # HTTP errors, connection refused, timeouts
            if _not_found(exc):
                raise DecodeError(
                    f"schema id {schema_id} not available from the registry: {exc}"
                ) from None
            raise RegistryUnavailable(
                f"schema registry unavailable, cannot fetch schema id {schema_id}: {_brief(exc)}"
            ) from None
        try:
            raw = json.loads(registered.schema_str or "")
            fetched = SchemaVersion.from_raw(raw, 0, Path(f"registry:{schema_id}"))
        except Exception as exc:  # not JSON, not a record: the registry's answer is unusable
            raise DecodeError(
                f"schema id {schema_id} from the registry is not a usable Avro record schema: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        local = self.store.by_fingerprint(fetched.fingerprint)
        return local if local is not None and local.name == fetched.name else fetched


REGISTRY_TIMEOUT_S = 10.0  # per HTTP request: a registry that hangs counts as unavailable


def _not_found(exc: Exception) -> bool:
    """The registry answered that it has no such schema (HTTP 404)."""
    return getattr(exc, "http_status_code", None) == 404


def _registry_refused(exc: Exception) -> bool:
    """The registry answered and said no to a registration (a 4xx other than auth/throttle)."""
    status = getattr(exc, "http_status_code", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (401, 403, 408, 429)


def _brief(exc: Exception) -> str:
    """One line naming a transport or HTTP failure."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def serde_for(settings: Settings, *, client_retries: int | None = None) -> Serde:
    """Confluent framing when a schema registry is configured, else single-object encoding.

    `client_retries` overrides the registry client's own retries (3, sleeping in the
    calling thread); stages pass 0 because they retry with backoff themselves.
    """
    if settings.schema_registry_url:
        return ConfluentSerde(settings.schema_registry_url, client_retries=client_retries)
    return SingleObjectSerde()
