"""A compiled yes/no schema check in front of the full validator, for the intake's hot path.

`pipelines.validation.validate` walks the schema's JSON for every record and collects
every problem as text: the right tool for a 422, but about half of the intake's own CPU
per accepted order. Almost every order is valid, and for those only "valid or not" is
needed. `compile_check` turns a schema into nested closures once, answering exactly
when `validate` would return no problems (same rules: unknown fields, required fields,
int and long ranges, bool is not a number); only a record it refuses pays for the full
walk, which then names every problem. A unit test holds the two to the same answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipelines.schemas import SchemaStore
from pipelines.validation import INT_RANGE, LONG_RANGE

Check = Callable[[Any], bool]
Validator = Callable[[str, Mapping[str, Any]], list[str]]


def compile_check(schema: Any) -> Check:
    """A predicate that is True exactly when `validate(schema, value)` finds no problem."""
    compiled: dict[str, Check] = {}
    return _compile(schema, schema.get("namespace") if isinstance(schema, dict) else None, compiled)


def with_fast_path(validate: Validator, store: SchemaStore, names: tuple[str, ...]) -> Validator:
    """`validate`, answering [] straight away for records the compiled check accepts."""
    checks = {name: compile_check(store.latest(name).raw) for name in names}

    def run(name: str, record: Mapping[str, Any]) -> list[str]:
        check = checks.get(name)
        if check is not None and check(record):
            return []
        return validate(name, record)

    return run


def _compile(schema: Any, namespace: str | None, named: dict[str, Check]) -> Check:
    if isinstance(schema, list):
        branches = [_compile(b, namespace, named) for b in schema]
        return lambda v: any(check(v) for check in branches)
    if isinstance(schema, str):
        return _PRIMITIVES.get(schema) or _reference(schema, named)
    kind = schema.get("type")
    if kind in ("record", "enum", "fixed"):
        return _named(schema, schema.get("namespace", namespace), named)
    if kind == "array":
        items = _compile(schema["items"], namespace, named)
        return lambda v: isinstance(v, list) and all(items(i) for i in v)
    if kind == "map":
        values = _compile(schema["values"], namespace, named)
        return lambda v: (
            isinstance(v, Mapping) and all(isinstance(k, str) and values(i) for k, i in v.items())
        )
    return _compile(kind, namespace, named)


def _reference(name: str, named: dict[str, Check]) -> Check:
    """A named type, looked up when it runs (it may be compiled later: recursion)."""

    def check(value: Any) -> bool:
        return named.get(name, _never)(value)  # an unknown name never validates

    return check


def _named(schema: Mapping[str, Any], namespace: str | None, named: dict[str, Check]) -> Check:
    kind = schema["type"]
    check: Check
    if kind == "record":
        check = _record(schema, namespace, named)
    elif kind == "enum":
        symbols = list(schema["symbols"])
        check = symbols.__contains__  # the validator's own membership test
    else:
        size = schema["size"]
        check = lambda v: isinstance(v, bytes) and len(v) == size  # noqa: E731
    named[schema["name"]] = check
    named[f"{namespace}.{schema['name']}" if namespace else schema["name"]] = check
    return check


def _record(schema: Mapping[str, Any], namespace: str | None, named: dict[str, Check]) -> Check:
    fields = {f["name"]: _compile(f["type"], namespace, named) for f in schema["fields"]}
    required = frozenset(f["name"] for f in schema["fields"] if "default" not in f)

    def check(value: Any) -> bool:
        if not isinstance(value, Mapping) or not required.issubset(value.keys()):
            return False
        for name, item in value.items():
            field = fields.get(name)
            if field is None or not field(item):
                return False
        return True

    return check


def _never(_value: Any) -> bool:
    return False


def _integer(low: int, high: int) -> Check:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


_PRIMITIVES: dict[str, Check] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "bytes": lambda v: isinstance(v, bytes),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "double": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "int": _integer(*INT_RANGE),
    "long": _integer(*LONG_RANGE),
}
