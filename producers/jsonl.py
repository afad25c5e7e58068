"""`sluice produce --topic T --from-file F`: users' own events, validated before any is sent.

All or none: a file with one bad line sends nothing unless the user asks to skip bad
lines, because half a file on a topic is harder to clean up than no file at all. So the
validation pass does everything that can fail before a record is handed to Kafka: it
parses, checks the schema, the key and event times, and really encodes key and value
with the serde, keeping the bytes. The send pass then only sends; nothing in it can
refuse a line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.catalog import TopicSpec
from pipelines.catalog import get as topic_spec
from pipelines.errors import SluiceError
from pipelines.eventtime import event_time_problem
from pipelines.progress import Reporter
from pipelines.serde import EncodeError, Serde, serde_for
from pipelines.settings import Settings
from producers.sender import EventSender, SendStats, require_topics

#: Fields that hold an event time, wherever a schema has them (see pipelines.eventtime).
EVENT_TIME_FIELDS = ("placed_at", "confirmed_at", "rejected_at", "completed_at")


class InvalidInput(SluiceError):
    """Lines of an input file that do not fit the topic's schema."""


@dataclass(frozen=True)
class Encoded:
    """One line, ready to send: its number in the file and the encoded key and value."""

    number: int
    key: bytes
    value: bytes


@dataclass
class Loaded:
    """A validated file: the encoded records to send and the problems found, by line number."""

    records: list[Encoded] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)


def load(path: Path, spec: TopicSpec, serde: Serde, physical: str | None = None) -> Loaded:
    """Parse, validate and encode every line; blank lines are ignored.

    `physical` is the topic's name on the cluster: with a schema registry, encoding
    registers the schema under `<physical>-value`, exactly as the send would.
    """
    if spec.value_schema is None:
        raise SluiceError(f"topic {spec.name} carries raw records; there is no schema to load into")
    loaded = Loaded()
    for number, line in _lines(path):
        try:
            loaded.records.append(_encode_line(number, line, spec, serde, physical))
        except _LineProblem as problem:
            loaded.problems.append((number, _printable(str(problem))))
    return loaded


class _LineProblem(Exception):
    """Why one line cannot be sent (internal: `load` turns it into a reported problem)."""


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered non-blank lines; a file that is not UTF-8 is refused naming the line."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(
                    f"{path}:{number}: not UTF-8 text (byte {exc.start + 1}); nothing was sent"
                ) from None
            if line.strip():
                yield number, line


def _encode_line(
    number: int, line: str, spec: TopicSpec, serde: Serde, physical: str | None
) -> Encoded:
    """The line's encoded record, or `_LineProblem` naming every field at fault."""
    assert spec.value_schema is not None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _LineProblem(f"malformed JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise _LineProblem("malformed JSON: nested too deeply") from None
    if not isinstance(record, dict):
        raise _LineProblem("expected a JSON object")
    problems = serde.validate(spec.value_schema, record)
    problems += text_problems(record)
    problems += [p for f in EVENT_TIME_FIELDS if f in record and (p := _time_problem(f, record))]
    if not problems and not isinstance(record.get(spec.key), str):
        problems.append(f"key field {spec.key!r} missing or not a string")
    if problems:
        raise _LineProblem("; ".join(problems))
    try:
        value = serde.encode(spec.value_schema, record, topic=physical)
    except EncodeError as exc:
        # nothing in the line explains it (the checks above passed): the serde or the
        # registry is at fault, not the line, so stop the whole file before sending
        raise InvalidInput(f"line {number}: {exc}; nothing was sent") from None
    return Encoded(number, record[spec.key].encode("utf-8"), value)


def _time_problem(name: str, record: Mapping[str, Any]) -> str | None:
    """An event-time problem, only for values the schema check let through (ints)."""
    value = record[name]
    return event_time_problem(name, value) if isinstance(value, int) else None


def text_problems(value: Any, path: str = "") -> list[str]:
    """Strings UTF-8 cannot carry: lone surrogates, which JSON allows as `\\ud800` escapes.

    The schema check accepts them (they are `str`), and only the encoder would fail on
    them, after the lines before had been sent; so they are looked for here, by path.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            where = _printable(path) or "(record)"
            return [f"{where}: text must be valid Unicode (it has a lone surrogate)"]
        return []
    if isinstance(value, Mapping):
        found: list[str] = []
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if text_problems(key):
                found.append(f"{_printable(where)}: a field name must be valid Unicode")
            found += text_problems(item, where)
        return found
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in text_problems(item, f"{path}[{i}]")]
    return []


def _printable(text: str) -> str:
    """`text` with lone surrogates escaped (`\\ud800`), so a message about them can be shown."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def produce_file(
    settings: Settings,
    topic: str,
    path: Path,
    *,
    skip_invalid: bool = False,
    reporter: Reporter | None = None,
) -> tuple[Loaded, SendStats | None]:
    """Validate and encode `path` for `topic`, then send it (all, or the valid lines)."""
    spec = topic_spec(topic)
    physical = settings.topic(topic)
    loaded = load(path, spec, serde_for(settings), physical)
    if loaded.problems and not skip_invalid:
        return loaded, None
    require_topics(settings, topic)
    sender = EventSender(settings)
    try:
        for encoded in loaded.records:
            sender.send(physical, encoded.key, encoded.value)
            if reporter is not None:
                reporter.advance()
    finally:
        stats = sender.close()
    return loaded, stats
