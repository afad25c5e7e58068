"""Schema evolution rule: every version is FULL compatible with the one before it.

FULL means both directions: new code reads old records (backward) and old code reads new
records (forward), so producers and stages can be upgraded in any order and replays of
old topics keep working. The check uses the Apache `avro` library's own
ReaderWriterCompatibilityChecker, an implementation independent of fastavro.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, Literal

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from pipelines.schemas import SchemaError, SchemaStore, SchemaVersion

Direction = Literal["backward", "forward"]


@dataclass(frozen=True)
class Problem:
    """One failed direction between two versions, with the fields at fault."""

    name: str
    older: int
    newer: int
    direction: Direction
    kinds: tuple[str, ...]
    fields: tuple[str, ...]
    details: tuple[str, ...]
    locations: tuple[str, ...]

    def __str__(self) -> str:
        reader, writer = (
            (self.newer, self.older) if self.direction == "backward" else (self.older, self.newer)
        )
        where = f"field {', '.join(self.fields)}" if self.fields else "the top level"
        details = f" ({'; '.join(self.details)})" if self.details else ""
        return (
            f"{self.name} v{self.newer} is not {self.direction} compatible with v{self.older}: "
            f"v{reader} cannot read v{writer} at {where}: {', '.join(self.kinds)}{details} "
            f"[{', '.join(self.locations) or '/'}]"
        )


@dataclass(frozen=True)
class PairResult:
    """The verdict on one consecutive pair of versions."""

    name: str
    older: int
    newer: int
    problems: tuple[Problem, ...]


def check_pair(older: SchemaVersion, newer: SchemaVersion) -> PairResult:
    """Both directions of compatibility between two versions of one schema."""
    old, new = _parse(older), _parse(newer)
    directions: tuple[tuple[Direction, Any, Any, dict[str, Any]], ...] = (
        ("backward", new, old, newer.raw),
        ("forward", old, new, older.raw),
    )
    problems = []
    for direction, reader, writer, reader_raw in directions:
        checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
        result = checker.get_compatibility(reader, writer)
        if result.compatibility is SchemaCompatibilityType.compatible:
            continue
        locations = tuple(sorted(loc for loc in result.locations if loc != "/"))
        fields = sorted({_field_path(reader_raw, loc) for loc in locations} - {""})
        problems.append(
            Problem(
                older.name,
                older.version,
                newer.version,
                direction,
                tuple(sorted(k.value for k in result.incompatibilities)),
                tuple(fields),
                tuple(sorted(str(m) for m in result.messages)),
                locations,
            )
        )
    return PairResult(older.name, older.version, newer.version, tuple(problems))


def _field_path(schema: Any, location: str) -> str:
    """Dotted field names along a JSON-pointer location such as /fields/2/type/items/fields/1."""
    names: list[str] = []
    node = schema
    tokens = [t for t in location.split("/") if t]
    for i, token in enumerate(tokens):
        if isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
            if i > 0 and tokens[i - 1] == "fields" and isinstance(node, dict):
                names.append(str(node.get("name", "")))
        elif isinstance(node, dict) and token in node:
            node = node[token]
        else:
            break
    return ".".join(names)


def check_store(store: SchemaStore) -> list[PairResult]:
    """Every consecutive pair of every schema in the store."""
    results = []
    for name in store.names():
        versions = store.versions(name)
        for older, newer in itertools.pairwise(versions):
            results.append(check_pair(older, newer))
    return results


def find_problems(store: SchemaStore) -> list[Problem]:
    """Every incompatibility in the store; empty when each evolution step is FULL."""
    return [problem for result in check_store(store) for problem in result.problems]


def _parse(version: SchemaVersion) -> avro.schema.Schema:
    """The same schema as the Apache library sees it; its refusal is a SchemaError."""
    try:
        return avro.schema.parse(json.dumps(version.raw))
    except Exception as exc:  # avro raises SchemaParseException and plain errors alike
        raise SchemaError(f"{version.path}: the avro library cannot parse it: {exc}") from None
