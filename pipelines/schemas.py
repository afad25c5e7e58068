"""The schema store: every `.avsc` in `schemas/`, each version with its fingerprint.

Schemas are files, never Python literals: the same files are what other languages and a
schema registry see. Each version is parsed once per process. The single-object
fingerprint is CRC-64-AVRO over the spec's Parsing Canonical Form as fastavro computes
both; the Apache `avro` Python library's canonical form keeps logicalType attributes, so
its fingerprints would not match what Java, Rust or Go readers compute.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from pipelines.errors import SluiceError
from pipelines.settings import schemas_dir_override

_FILE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc$")


class SchemaError(SluiceError):
    """A schema file is missing, malformed, misnamed, or not known."""


def crc64_fingerprint(canonical: str) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint of a canonical form, little-endian as on the wire."""
    return bytes.fromhex(fastavro_fingerprint(canonical, "CRC-64-AVRO"))


def strip_logical_types(schema: Any) -> Any:
    """A copy without logicalType attributes, so timestamp-millis fields read as plain ints.

    The canonical form ignores logicalType, so this changes no fingerprint; it only makes
    fastavro hand out epoch milliseconds instead of datetimes: cheap window arithmetic,
    JSON-friendly values, and identical values after a replay.
    """
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(v) for v in schema]
    return schema


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one named schema, ready for the hot path."""

    name: str
    version: int
    path: Path
    raw: dict[str, Any] = field(repr=False)
    canonical: str = field(repr=False)
    fingerprint: bytes
    parsed: Any = field(repr=False, compare=False)

    @classmethod
    def from_file(cls, path: Path) -> SchemaVersion:
        """Load `<Name>.v<N>.avsc`, refusing files whose name disagrees with the schema."""
        match = _FILE.match(path.name)
        if match is None:
            raise SchemaError(f"{path.name}: schema files are named <Name>.v<N>.avsc")
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SchemaError(f"{path}: cannot read schema: {exc}") from None
        version = cls.from_raw(raw, int(match["version"]), path)
        short = version.name.rsplit(".", 1)[-1]
        if short != match["name"]:
            raise SchemaError(f"{path}: file says {match['name']}, schema says {version.name}")
        return version

    @classmethod
    def from_raw(cls, raw: Any, version: int, path: Path) -> SchemaVersion:
        """Parse a record schema (from a file or a registry) once, with its fingerprint."""
        if not isinstance(raw, dict) or raw.get("type") != "record" or "name" not in raw:
            raise SchemaError(f"{path}: top level must be a named record schema")
        try:
            parsed = fastavro.parse_schema(strip_logical_types(raw), named_schemas={})
            canonical = to_parsing_canonical_form(raw)
        except Exception as exc:  # fastavro raises several kinds for bad schemas
            raise SchemaError(f"{path}: invalid Avro schema: {exc}") from None
        name = str(raw["name"])
        full = f"{raw['namespace']}.{name}" if raw.get("namespace") and "." not in name else name
        return cls(full, version, path, raw, canonical, crc64_fingerprint(canonical), parsed)


class SchemaStore:
    """All schema versions of a directory, by name, version and fingerprint."""

    def __init__(self, versions: Iterable[SchemaVersion]) -> None:
        self._by_name: dict[str, dict[int, SchemaVersion]] = {}
        self._by_fp: dict[bytes, SchemaVersion] = {}
        for version in versions:
            self._by_name.setdefault(version.name, {})[version.version] = version
            other = self._by_fp.get(version.fingerprint)
            if other is not None and other.name == version.name:
                raise SchemaError(f"{version.path} is identical to {other.path}")
            self._by_fp.setdefault(version.fingerprint, version)
        for name, versions_ in self._by_name.items():
            numbers = sorted(versions_)
            if numbers != list(range(1, len(numbers) + 1)):
                raise SchemaError(f"{name}: versions must be 1..N without gaps, found {numbers}")

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaStore:
        directory = directory or schemas_dir()
        files = sorted(directory.glob("*.avsc"))
        if not files:
            raise SchemaError(f"no .avsc files in {directory}")
        return cls(SchemaVersion.from_file(path) for path in files)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def versions(self, name: str) -> list[SchemaVersion]:
        return [v for _, v in sorted(self._versions(name).items())]

    def latest(self, name: str) -> SchemaVersion:
        versions = self._versions(name)
        return versions[max(versions)]

    def get(self, name: str, version: int) -> SchemaVersion:
        try:
            return self._versions(name)[version]
        except KeyError:
            raise SchemaError(f"{name} has no version {version}") from None

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion | None:
        return self._by_fp.get(fingerprint)

    def _versions(self, name: str) -> dict[int, SchemaVersion]:
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaError(
                f"unknown schema {name!r}; known: {', '.join(self.names())}"
            ) from None


PACKAGED = Path(__file__).resolve().parent / "_schemas"  # the wheel's copy of schemas/
CHECKOUT = Path(__file__).resolve().parents[1] / "schemas"


def schemas_dir() -> Path:
    """`$SLUICE_SCHEMAS_DIR`, else the schemas installed with the package (a wheel carries
    `schemas/` as `pipelines/_schemas`), else `schemas/` of this checkout. Never the
    working directory: a command run from anywhere reads the same schemas."""
    override = schemas_dir_override()
    if override is not None:
        return override
    return PACKAGED if PACKAGED.is_dir() else CHECKOUT


@lru_cache(maxsize=8)
def store_for(directory: Path) -> SchemaStore:
    """The store of one directory, loaded once per process."""
    return SchemaStore.load(directory)


def default_store() -> SchemaStore:
    """The store of the configured schemas directory."""
    return store_for(schemas_dir())
