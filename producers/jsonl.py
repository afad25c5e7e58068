"""`sluice produce --topic T --from-file F`: users' own events, validated before any is sent.

All or none: a file with one bad line sends nothing unless the user asks to skip bad
lines, because half a file on a topic is harder to clean up than no file at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.catalog import TopicSpec
from pipelines.catalog import get as topic_spec
from pipelines.errors import SluiceError
from pipelines.progress import Reporter
from pipelines.serde import Serde, serde_for
from pipelines.settings import Settings
from producers.sender import EventSender, SendStats, require_topics


class InvalidInput(SluiceError):
    """Lines of an input file that do not fit the topic's schema."""


@dataclass
class Loaded:
    """A validated file: the records to send and the problems found, by line number."""

    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)


def load(path: Path, spec: TopicSpec, serde: Serde) -> Loaded:
    """Parse and validate every line; blank lines are ignored."""
    if spec.value_schema is None:
        raise SluiceError(f"topic {spec.name} carries raw records; there is no schema to load into")
    loaded = Loaded()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                loaded.problems.append((number, f"malformed JSON: {exc.msg} at column {exc.colno}"))
                continue
            if not isinstance(record, dict):
                loaded.problems.append((number, "expected a JSON object"))
                continue
            errors = serde.validate(spec.value_schema, record)
            if errors:
                loaded.problems.append((number, "; ".join(errors)))
            elif not isinstance(record.get(spec.key), str):
                loaded.problems.append((number, f"key field {spec.key!r} missing or not a string"))
            else:
                loaded.records.append((number, record))
    return loaded


def produce_file(
    settings: Settings,
    topic: str,
    path: Path,
    *,
    skip_invalid: bool = False,
    reporter: Reporter | None = None,
) -> tuple[Loaded, SendStats | None]:
    """Validate `path` against `topic`'s schema, then send it (all, or the valid lines)."""
    spec = topic_spec(topic)
    serde = serde_for(settings)
    loaded = load(path, spec, serde)
    if loaded.problems and not skip_invalid:
        return loaded, None
    require_topics(settings, topic)
    assert spec.value_schema is not None
    sender = EventSender(settings)
    physical = settings.topic(topic)
    try:
        for _number, record in loaded.records:
            value = serde.encode(spec.value_schema, record, topic=physical)
            sender.send(physical, str(record[spec.key]).encode(), value)
            if reporter is not None:
                reporter.advance()
    finally:
        stats = sender.close()
    return loaded, stats
