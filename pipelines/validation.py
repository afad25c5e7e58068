"""Check a Python value against an Avro schema and say, per field, what is wrong.

fastavro validates too, but stops at the first problem and names it in its own terms.
People feeding Sluice JSON files or HTTP bodies need every problem at once, as a path
(`lines[0].quantity`) and a plain reason, and they need unknown fields reported rather
than silently dropped. This walks the schema's JSON, so it knows nothing of fastavro.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

INT_RANGE = (-(2**31), 2**31 - 1)
LONG_RANGE = (-(2**63), 2**63 - 1)

Named = dict[str, Any]


def validate(schema: Mapping[str, Any], value: Any) -> list[str]:
    """Every problem with `value` under `schema`, as "path: reason" strings; empty if valid."""
    problems: list[str] = []
    _check(schema, value, "", _names(schema, schema.get("namespace")), problems)
    return problems


def _names(schema: Any, namespace: str | None, into: Named | None = None) -> Named:
    """Index every named type (record, enum, fixed) by short and full name."""
    into = {} if into is None else into
    if isinstance(schema, list):
        for branch in schema:
            _names(branch, namespace, into)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            ns = schema.get("namespace", namespace)
            into[schema["name"]] = schema
            into[f"{ns}.{schema['name']}" if ns else schema["name"]] = schema
            namespace = ns
        for child in schema.get("fields", []):
            _names(child["type"], namespace, into)
        for key in ("items", "values"):
            if key in schema:
                _names(schema[key], namespace, into)
        if isinstance(kind, (dict, list)):
            _names(kind, namespace, into)
    return into


def _check(schema: Any, value: Any, path: str, names: Named, out: list[str]) -> None:
    if isinstance(schema, list):
        _check_union(schema, value, path, names, out)
        return
    if isinstance(schema, str):
        if schema in names:
            _check(names[schema], value, path, names, out)
        else:
            _check_primitive(schema, value, path, out)
        return
    kind = schema.get("type")
    if kind == "record":
        _check_record(schema, value, path, names, out)
    elif kind == "enum":
        if value not in schema["symbols"]:
            _fail(out, path, f"must be one of {', '.join(schema['symbols'])}, got {value!r}")
    elif kind == "array":
        _check_array(schema, value, path, names, out)
    elif kind == "map":
        _check_map(schema, value, path, names, out)
    elif kind == "fixed":
        if not isinstance(value, bytes) or len(value) != schema["size"]:
            _fail(out, path, f"must be {schema['size']} bytes")
    else:
        _check(kind, value, path, names, out)


def _check_record(schema: Named, value: Any, path: str, names: Named, out: list[str]) -> None:
    if not isinstance(value, Mapping):
        _fail(out, path, f"must be an object, got {_kind(value)}")
        return
    fields = {f["name"]: f for f in schema["fields"]}
    for name in value:
        if name not in fields:
            _fail(out, _join(path, str(name)), "unknown field")
    for name, spec in fields.items():
        if name in value:
            _check(spec["type"], value[name], _join(path, name), names, out)
        elif "default" not in spec:
            _fail(out, _join(path, name), "required field is missing")


def _check_union(branches: list[Any], value: Any, path: str, names: Named, out: list[str]) -> None:
    for branch in branches:
        trial: list[str] = []
        _check(branch, value, path, names, trial)
        if not trial:
            return
    kinds = ", ".join(b if isinstance(b, str) else str(b.get("type")) for b in branches)
    _fail(out, path, f"must be one of: {kinds}; got {_kind(value)}")


def _check_array(schema: Named, value: Any, path: str, names: Named, out: list[str]) -> None:
    if not isinstance(value, list):
        _fail(out, path, f"must be an array, got {_kind(value)}")
        return
    for i, item in enumerate(value):
        _check(schema["items"], item, f"{path}[{i}]", names, out)


def _check_map(schema: Named, value: Any, path: str, names: Named, out: list[str]) -> None:
    if not isinstance(value, Mapping):
        _fail(out, path, f"must be an object, got {_kind(value)}")
        return
    for key, item in value.items():
        if not isinstance(key, str):
            _fail(out, path, "map keys must be strings")
        _check(schema["values"], item, f"{path}[{key!r}]", names, out)


def _check_primitive(kind: str, value: Any, path: str, out: list[str]) -> None:
    ok = {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "string": isinstance(value, str),
        "bytes": isinstance(value, bytes),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "double": isinstance(value, (int, float)) and not isinstance(value, bool),
    }
    if kind in ("int", "long"):
        low, high = INT_RANGE if kind == "int" else LONG_RANGE
        if not isinstance(value, int) or isinstance(value, bool):
            _fail(out, path, f"must be an integer ({kind}), got {_kind(value)}")
        elif not low <= value <= high:
            _fail(out, path, f"{value} is out of range for {kind}")
        return
    if kind not in ok:
        _fail(out, path, f"unsupported schema type {kind!r}")
    elif not ok[kind]:
        _fail(out, path, f"must be {kind}, got {_kind(value)}")


def _kind(value: Any) -> str:
    """How a JSON user would name the value's type."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    names = {type(None): "null", list: "array", dict: "object"}
    return names.get(type(value), "object" if isinstance(value, Mapping) else type(value).__name__)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _fail(out: list[str], path: str, reason: str) -> None:
    out.append(f"{path or '(record)'}: {reason}")
