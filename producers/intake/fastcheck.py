"""A compiled yes/no schema check in front of the full validator, for the intake's hot path.

`pipelines.validation.validate` walks the schema's JSON for every record and collects
every problem as text: the right tool for a 422, but about half of the intake's own CPU
per accepted order. Almost every order is valid, and for those only "valid or not" is
needed. `compile_check` turns a schema into nested closures once, answering exactly
when `validate` would return no problems (same rules: unknown fields, required fields,
int and long ranges, bool is not a number); only a record it refuses pays for the full
walk, which then names every problem. A unit test holds the two to the same answers.

The closures are written for the interpreter's sake (profiled under load, this check was
the intake's largest own cost after the collector): plain loops instead of generator
expressions, `null` branches of a union tested inline, and exact-type tests (`type(v)
is dict`, `is int`) before the slower `isinstance` against ABCs, which still decides
every other value.
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
        return _union([_compile(b, namespace, named) for b in schema], "null" in schema)
    if isinstance(schema, str):
        return _PRIMITIVES.get(schema) or _reference(schema, named)
    kind = schema.get("type")
    if kind in ("record", "enum", "fixed"):
        return _named(schema, schema.get("namespace", namespace), named)
    if kind == "array":
        return _array(_compile(schema["items"], namespace, named))
    if kind == "map":
        values = _compile(schema["values"], namespace, named)
        return lambda v: (
            isinstance(v, Mapping) and all(isinstance(k, str) and values(i) for k, i in v.items())
        )
    return _compile(kind, namespace, named)


def _union(branches: list[Check], nullable: bool) -> Check:
    """Any branch accepts; a `null` branch (the usual optional field) costs one `is`."""
    others = [b for b in branches if b is not _PRIMITIVES["null"]] if nullable else branches
    if len(others) == 1:
        only = others[0]
        if nullable:
            return lambda v: v is None or only(v)
        return only

    def check(value: Any) -> bool:
        if nullable and value is None:
            return True
        for branch in others:  # noqa: SIM110 (a loop: no generator per value)
            if branch(value):
                return True
        return False

    return check


def _array(items: Check) -> Check:
    def check(value: Any) -> bool:
        if not isinstance(value, list):
            return False
        for item in value:  # noqa: SIM110 (a loop: no generator per value)
            if not items(item):
                return False
        return True

    return check


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
        if type(value) is not dict and not isinstance(value, Mapping):
            return False
        if not required.issubset(value.keys()):
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
    def check(v: Any) -> bool:
        if type(v) is int:
            return low <= v <= high
        return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high

    return check


_PRIMITIVES: dict[str, Check] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "string": lambda v: type(v) is str or isinstance(v, str),
    "bytes": lambda v: isinstance(v, bytes),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "double": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "int": _integer(*INT_RANGE),
    "long": _integer(*LONG_RANGE),
}
