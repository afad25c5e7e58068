"""A schema-specialised Avro binary encoder, generated once per schema version.

The producer hot path spends most of its time encoding. A generic encoder walks the
schema for every record; this module turns a schema into straight-line Python (one
statement per field, enum lookups as dicts, the single-object header baked in) and
compiles it once. The output is byte-for-byte what fastavro writes, which the tests
check on every schema and on generated records. Anything unexpected in a record
(a missing field, a wrong type, an unknown symbol) raises, and the caller turns that
into a readable EncodeError.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

Encoder = Callable[[Mapping[str, Any]], bytes]

_CACHE = 1 << 15
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_varint(n) for n in range(_CACHE)]


LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1


def write_long(n: int) -> bytes:
    """Zig-zag varint of a 64-bit long; out-of-range values raise."""
    if not LONG_MIN <= n <= LONG_MAX:
        raise ValueError(f"{n} is out of range for long")
    z = (n << 1) ^ (n >> 63)
    return _SMALL[z] if 0 <= z < _CACHE else _varint(z)


def write_int(n: int) -> bytes:
    """Zig-zag varint of a 32-bit int; out-of-range values raise."""
    if not INT_MIN <= n <= INT_MAX:
        raise ValueError(f"{n} is out of range for int")
    z = (n << 1) ^ (n >> 31)
    return _SMALL[z] if z < _CACHE else _varint(z)


def write_string(s: str) -> bytes:
    data = s.encode()
    size = len(data)
    return (_SMALL[size << 1] if size < _CACHE >> 1 else write_long(size)) + data


def write_bytes(b: bytes) -> bytes:
    return write_long(len(b)) + b


def write_boolean(b: bool) -> bytes:
    if b is True:
        return b"\x01"
    if b is False:
        return b"\x00"
    raise TypeError(f"{b!r} is not a boolean")


_HELPERS: dict[str, Any] = {
    "_S": _SMALL,
    "_long": write_long,
    "_int": write_int,
    "_str": write_string,
    "_bytes": write_bytes,
    "_bool": write_boolean,
    "_float": struct.Struct("<f").pack,
    "_double": struct.Struct("<d").pack,
}


class _Gen:
    """Emits the encoder's source, one line at a time, with unique local names."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.named = named
        self.counter = 0

    def var(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def const(self, value: Any) -> str:
        name = self.var("_c")
        self.consts[name] = value
        return name

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def value(self, schema: Any, expr: str, indent: int) -> None:
        """Append the encoding of `expr` (a Python expression) under `schema`."""
        if isinstance(schema, str) and schema in self.named:
            schema = self.named[schema]
        if isinstance(schema, list):
            self.union(schema, expr, indent)
        elif isinstance(schema, str):
            self.primitive(schema, expr, indent)
        else:
            self.complex(schema, expr, indent)

    def primitive(self, kind: str, expr: str, indent: int) -> None:
        calls = {"bytes": "_bytes", "boolean": "_bool", "float": "_float", "double": "_double"}
        if kind == "null":
            self.emit(indent, f"if {expr} is not None: raise TypeError('expected null')")
        elif kind == "string":
            # inlined: no call, no concatenation, for all but huge strings
            data, size = self.var("d"), self.var("n")
            self.emit(indent, f"{data} = {expr}.encode()")
            self.emit(indent, f"{size} = len({data})")
            self.emit(indent, f"a(_S[{size} << 1] if {size} < {_CACHE >> 1} else _long({size}))")
            self.emit(indent, f"a({data})")
        elif kind in ("int", "long"):
            val, zig, bits = self.var("v"), self.var("z"), 31 if kind == "int" else 63
            fallback = "_int" if kind == "int" else "_long"
            self.emit(indent, f"{val} = {expr}")
            self.emit(indent, f"{zig} = ({val} << 1) ^ ({val} >> {bits})")
            self.emit(indent, f"a(_S[{zig}] if 0 <= {zig} < {_CACHE} else {fallback}({val}))")
        elif kind in calls:
            self.emit(indent, f"a({calls[kind]}({expr}))")
        else:
            raise ValueError(f"unsupported Avro type {kind!r}")

    def complex(self, schema: dict[str, Any], expr: str, indent: int) -> None:
        kind = schema["type"]
        if kind == "record":
            self.remember(schema)
            rec = self.var("r")
            self.emit(indent, f"{rec} = {expr}")
            for field in schema["fields"]:
                getter = (
                    f"{rec}.get({field['name']!r}, {self.const(field['default'])})"
                    if "default" in field
                    else f"{rec}[{field['name']!r}]"
                )
                self.value(field["type"], getter, indent)
        elif kind == "enum":
            self.remember(schema)
            table = self.const({s: write_long(i) for i, s in enumerate(schema["symbols"])})
            self.emit(indent, f"a({table}[{expr}])")
        elif kind in ("array", "map"):
            self.collection(schema, expr, indent)
        elif kind == "fixed":
            self.remember(schema)
            self.emit(indent, f"if len({expr}) != {schema['size']}: raise ValueError('fixed size')")
            self.emit(indent, f"a({expr})")
        else:
            self.value(kind, expr, indent)

    def collection(self, schema: dict[str, Any], expr: str, indent: int) -> None:
        items, item = self.var("xs"), self.var("x")
        self.emit(indent, f"{items} = {expr}")
        self.emit(indent, f"if {items}:")
        self.emit(indent + 1, f"a(_long(len({items})))")
        if schema["type"] == "array":
            self.emit(indent + 1, f"for {item} in {items}:")
            self.value(schema["items"], item, indent + 2)
        else:
            key = self.var("k")
            self.emit(indent + 1, f"for {key}, {item} in {items}.items():")
            self.emit(indent + 2, f"a(_str({key}))")
            self.value(schema["values"], item, indent + 2)
        self.emit(indent, "a(b'\\x00')")

    def union(self, branches: list[Any], expr: str, indent: int) -> None:
        val = self.var("u")
        self.emit(indent, f"{val} = {expr}")
        keyword = "if"
        for index, branch in enumerate(branches):
            resolved = self.named.get(branch, branch) if isinstance(branch, str) else branch
            self.emit(indent, f"{keyword} {_test(resolved, val)}:")
            self.emit(indent + 1, f"a({self.const(write_long(index))})")
            if resolved != "null":
                self.value(branch, val, indent + 1)
            keyword = "elif"
        self.emit(indent, "else:")
        self.emit(indent + 1, f"raise TypeError(f'{{{val}!r}} matches no branch of the union')")

    def remember(self, schema: dict[str, Any]) -> None:
        self.named.setdefault(schema["name"], schema)


def _test(schema: Any, val: str) -> str:
    """A Python condition picking a union branch, the way fastavro picks it for plain values."""
    kind = schema if isinstance(schema, str) else schema["type"]
    return {
        "null": f"{val} is None",
        "boolean": f"isinstance({val}, bool)",
        "int": f"isinstance({val}, int) and not isinstance({val}, bool)",
        "long": f"isinstance({val}, int) and not isinstance({val}, bool)",
        "float": f"isinstance({val}, (int, float)) and not isinstance({val}, bool)",
        "double": f"isinstance({val}, (int, float)) and not isinstance({val}, bool)",
        "string": f"isinstance({val}, str)",
        "bytes": f"isinstance({val}, bytes)",
        "array": f"isinstance({val}, list)",
    }.get(kind, f"isinstance({val}, dict)")


def compile_encoder(schema: dict[str, Any], header: bytes = b"") -> Encoder:
    """An encoder for records of `schema` (logical types ignored) that prefixes `header`."""
    gen = _Gen({})
    gen.emit(1, f"parts = [{gen.const(header)}]")
    gen.emit(1, "a = parts.append")
    gen.value(schema, "record", 1)
    gen.emit(1, "return b''.join(parts)")
    source = "def encode(record):\n" + "\n".join(gen.lines) + "\n"
    namespace: dict[str, Any] = {**_HELPERS, **gen.consts}
    exec(compile(source, f"<avro encoder {schema.get('name')}>", "exec"), namespace)
    encoder: Encoder = namespace["encode"]
    encoder.__doc__ = source
    return encoder
