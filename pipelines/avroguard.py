"""What fastavro's reader lets through that Avro forbids: `int` values beyond 32 bits.

fastavro reads an Avro `int` with its `long` reader, so a varint of up to ten bytes in
an int field decodes to a value no Avro writer can produce (Java's decoder rejects it
as "Invalid int encoding"). Such a record is corrupt or hostile, yet it decodes: the
order stage would take a line with quantity 2**40, pass it on, and fail only when it
re-encodes the reservation, far from the DLQ. Longs cannot overflow this way (fastavro
wraps them to 64 bits), and every other type is checked by the reader itself, so a
guard over the int fields is all that is missing for "what decodes fits the schema".

`int_guard` compiles that guard once per schema, visiting only the parts of a value
that can hold an int (for OrderPlaced: each line's quantity), so it costs well under a
microsecond per record (plain loops over dicts and lists, which is what fastavro
hands out). A schema without an int gets no guard at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: True when every int in the value fits 32 bits.
Guard = Callable[[Any], bool]

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
_PRIMITIVES = frozenset({"null", "boolean", "long", "float", "double", "bytes", "string"})
_WIDER = frozenset({"long", "float", "double"})


def int_guard(schema: Any) -> Guard | None:
    """The guard for values of `schema` (parsed JSON), or None when it has no int."""
    namespace = schema.get("namespace") if isinstance(schema, Mapping) else None
    return _compile(schema, namespace, {})


def _fits(value: Any) -> bool:
    return type(value) is not int or INT_MIN <= value <= INT_MAX


def _compile(schema: Any, namespace: str | None, named: dict[str, Guard | None]) -> Guard | None:
    if isinstance(schema, list):
        return _union(schema, namespace, named)
    if isinstance(schema, str):
        return _by_name(schema, namespace, named)
    kind = schema.get("type")
    if kind == "record":
        return _record(schema, namespace, named)
    if kind in ("enum", "fixed"):
        _register(schema, namespace, named, None)
        return None
    if kind in ("array", "map"):
        return _container(schema, namespace, named)
    return _compile(kind, namespace, named)  # {"type": "int", ...} and the like


def _by_name(name: str, namespace: str | None, named: dict[str, Guard | None]) -> Guard | None:
    if name == "int":
        return _fits
    return None if name in _PRIMITIVES else _reference(name, namespace, named)


def _container(
    schema: Mapping[str, Any], namespace: str | None, named: dict[str, Guard | None]
) -> Guard | None:
    is_array = schema["type"] == "array"
    inner = _compile(schema["items" if is_array else "values"], namespace, named)
    if inner is None:
        return None

    def guard(value: Any) -> bool:
        items = value if isinstance(value, list) else value.values() if type(value) is dict else ()
        return all(map(inner, items))

    return guard


def _union(
    branches: list[Any], namespace: str | None, named: dict[str, Guard | None]
) -> Guard | None:
    """Each branch guard checks only values shaped like its branch. An int next to a long
    (or a float) is not checked: the decoded value no longer says which branch it was."""
    wide = any(b in _WIDER for b in branches if isinstance(b, str))
    guards = [
        guard
        for branch in branches
        if not (wide and branch == "int")
        and (guard := _compile(branch, namespace, named)) is not None
    ]
    if not guards:
        return None
    if len(guards) == 1:
        return guards[0]
    return lambda v: all(guard(v) for guard in guards)


def _record(
    schema: Mapping[str, Any], namespace: str | None, named: dict[str, Guard | None]
) -> Guard | None:
    namespace = schema.get("namespace", namespace)
    compiled: list[Guard] = []

    def lazy(value: Any) -> bool:
        return not compiled or compiled[0](value)

    # registered before the fields are compiled, so a recursive reference finds it
    _register(schema, namespace, named, lazy)
    fields = [
        (field["name"], check)
        for field in schema["fields"]
        if (check := _compile(field["type"], namespace, named)) is not None
    ]
    if not fields:
        _register(schema, namespace, named, None)
        return None

    def guard(value: Any) -> bool:
        if type(value) is not dict:  # what fastavro hands out for a record
            return True
        for name, check in fields:  # noqa: SIM110 (all() over a generator is 2x slower)
            if not check(value.get(name)):
                return False
        return True

    compiled.append(guard)
    _register(schema, namespace, named, guard)
    return guard


def _reference(name: str, namespace: str | None, named: dict[str, Guard | None]) -> Guard | None:
    """A named type defined earlier in the schema (Avro requires that order)."""
    full = name if "." in name or not namespace else f"{namespace}.{name}"
    return named.get(full, named.get(name))


def _register(
    schema: Mapping[str, Any],
    namespace: str | None,
    named: dict[str, Guard | None],
    guard: Guard | None,
) -> None:
    name = str(schema["name"])
    named[name] = guard
    named[name if "." in name or not namespace else f"{namespace}.{name}"] = guard
