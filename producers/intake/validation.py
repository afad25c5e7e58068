"""From an HTTP body to an OrderPlaced record, or to every reason it cannot be one.

The intake checks the *shape* of an order: the Avro schema (through the serde's
validator, so HTTP and the bulk loader agree on what a valid record is) plus transport
limits (body size, line count, an order id that is safe as a Kafka key and a URL
segment). Business rules (non-empty lines, totals that add up, known SKUs) stay with
the order stage, which rejects such orders as INVALID; one place decides them, and a
client sees the outcome at `GET /orders/{id}`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import orjson

from pipelines.eventtime import MAX_EVENT_MS, MIN_EVENT_MS, event_time_problem
from pipelines.httperrors import HttpProblem

PLACED = "sluice.orders.OrderPlaced"
#: Order ids become Kafka keys and URL path segments: keep them short and plain.
ORDER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
#: Idempotency keys are visible ASCII (no spaces, which proxies may trim), 1..255 chars.
KEY_PATTERN = r"^[!-~]{1,255}$"
MAX_PROBLEMS = 50
SERVER_FILLED = ("client_ref",)

_ORDER_ID = re.compile(ORDER_ID_PATTERN)
_KEY = re.compile(KEY_PATTERN)

Validator = Callable[[str, Mapping[str, Any]], list[str]]


class Rejection(HttpProblem):
    """A request the intake answers with an error status instead of accepting it."""


class OrderRequest(NamedTuple):
    """A valid order ready to publish, and the digest of its content (with a key only).

    A named tuple (immutable, and cheaper to build than a frozen dataclass).
    """

    record: dict[str, Any]
    fingerprint: str
    generated: tuple[str, ...] = ()

    @property
    def order_id(self) -> str:
        return str(self.record["order_id"])


def new_order_id() -> str:
    """A server-assigned order id (random, so two intakes never collide).

    The same 128 bits from the OS's CSPRNG as `secrets.token_hex(16)`, without its two
    Python-level calls: this runs for every order that comes without an id.
    """
    return "O-" + os.urandom(16).hex()


def parse_json(raw: bytes, *, exact: bool = False) -> Any:
    """The decoded body; malformed JSON (or absurd nesting) is a 400 that says where.

    orjson parses the common case several times faster than `json`. Whatever it refuses
    goes through `json.loads`, which then decides exactly as before: it also accepts
    what orjson does not (lone surrogate escapes, NaN, UTF-16 bodies: the schema check
    answers those with a 422), and its errors carry the positions clients already get.
    The two can differ only on numbers no valid order holds (orjson reads integers
    beyond 64 bits as floats), so `read_order` asks for the `exact` parse before it
    words a 422.
    """
    if not raw.strip():
        raise Rejection(400, "the request body is empty; send the order as a JSON object")
    if not exact:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise Rejection(
            400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except UnicodeDecodeError:
        raise Rejection(400, "malformed JSON: the body is not UTF-8 text") from None
    except RecursionError:
        raise Rejection(400, "malformed JSON: nested too deeply") from None
    except ValueError:  # an integer longer than Python converts from text
        raise Rejection(
            400,
            f"a number in the body has more than {sys.get_int_max_str_digits()} digits; "
            "no field takes one that long",
        ) from None


def read_order(
    raw: bytes,
    *,
    key: str | None,
    max_lines: int,
    now_ms: int,
    validate: Validator,
    new_id: Callable[[], str] = new_order_id,
) -> OrderRequest:
    """`build_order` on the parsed body; a refused body is read again by `json` for the 422.

    A record that passes the schema check holds only text, in-range integers, lists,
    objects and nulls, which orjson and `json` read alike; a refused one may hold a
    number they read differently, and its problems must name the value the client sent.
    """
    try:
        return build_order(
            parse_json(raw),
            key=key,
            max_lines=max_lines,
            now_ms=now_ms,
            validate=validate,
            new_id=new_id,
        )
    except Rejection as exc:
        if exc.status != 422:
            raise
    return build_order(
        parse_json(raw, exact=True),
        key=key,
        max_lines=max_lines,
        now_ms=now_ms,
        validate=validate,
        new_id=new_id,
    )


def check_key(header: str | None) -> str | None:
    """The Idempotency-Key, if any; one that does not fit KEY_PATTERN is a 400."""
    if header is None:
        return None
    if not _KEY.fullmatch(header):
        raise Rejection(
            400,
            "Idempotency-Key must be 1 to 255 visible ASCII characters (no spaces)",
        )
    return header


def build_order(
    body: Any,
    *,
    key: str | None,
    max_lines: int,
    now_ms: int,
    validate: Validator,
    new_id: Callable[[], str] = new_order_id,
) -> OrderRequest:
    """Fill what the server owns, then validate; a 422 lists every field problem at once."""
    if not isinstance(body, dict):
        raise Rejection(422, "invalid order", ["(record): the order must be a JSON object"])
    problems = _limit_problems(body, max_lines)
    record = {k: v for k, v in body.items() if k not in SERVER_FILLED}
    generated = []
    if "order_id" not in record:
        record["order_id"] = new_id()
        generated.append("order_id")
    if "placed_at" not in record:
        record["placed_at"] = now_ms
        generated.append("placed_at")
    record.setdefault("channel", "WEB")
    record["client_ref"] = key
    problems += validate(PLACED, record)
    placed_at = record["placed_at"]
    if type(placed_at) is int and not MIN_EVENT_MS <= placed_at <= MAX_EVENT_MS:
        problems += _event_time_problems(placed_at, problems)
    if problems:
        raise Rejection(422, "invalid order", _capped(problems))
    digest = fingerprint(record, generated) if key is not None else ""
    return OrderRequest(record, digest, tuple(generated))


def _limit_problems(body: Mapping[str, Any], max_lines: int) -> list[str]:
    """Problems the Avro schema cannot express: server-owned fields, id shape, line count."""
    problems = [
        f"{name}: set by the server (from the Idempotency-Key header); do not send it"
        for name in SERVER_FILLED
        if name in body
    ]
    order_id = body.get("order_id")
    if isinstance(order_id, str) and not _ORDER_ID.fullmatch(order_id):
        problems.append(
            "order_id: must be 1 to 64 letters, digits or . _ : - and start with a letter or digit"
        )
    lines = body.get("lines")
    if isinstance(lines, list) and len(lines) > max_lines:
        problems.append(f"lines: at most {max_lines} lines per order, got {len(lines)}")
    return problems


def _event_time_problems(placed_at: int, known: list[str]) -> list[str]:
    """`placed_at` outside the event-time range, unless a problem already names it.

    The schema allows any `long`, but window arithmetic near its ends overflows
    (`pipelines.eventtime`), so the intake refuses what every stage would dead-letter.
    Checked after the schema (fast path or full walk alike), so the two always agree.
    """
    if any(p.startswith("placed_at:") for p in known):
        return []
    problem = event_time_problem("placed_at", placed_at)
    return [] if problem is None else [problem]


def _capped(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more problems"]


def text_problems(value: Any, path: str = "") -> list[str]:
    """Strings that UTF-8 cannot carry (lone surrogates, which JSON allows as escapes).

    Only consulted when encoding failed, to name the field; the hot path never walks this.
    """
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return [f"{path or '(record)'}: text must be valid Unicode (it has a lone surrogate)"]
        return []
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in text_problems(v, f"{path}.{k}".lstrip("."))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in text_problems(v, f"{path}[{i}]")]
    return []


def fingerprint(record: Mapping[str, Any], generated: tuple[str, ...] | list[str] = ()) -> str:
    """A digest of what the client asked for: the record without server-made values.

    Two requests with one Idempotency-Key must carry the same order; comparing digests
    (not bodies) lets the digest travel in a Kafka header and survive a restart, so the
    digested text must never change: it is `json.dumps(sort_keys=True, separators=(",",
    ":"), ensure_ascii=True)`. orjson writes the very same bytes, several times faster,
    whenever its output is printable ASCII (it writes other text unescaped, and those
    records take the `json` route); a unit test holds the two to the same text. Records
    reach here validated, so they hold no floats (which the two print differently).
    """
    client = {k: v for k, v in record.items() if k not in generated and k not in SERVER_FILLED}
    return hashlib.sha256(canonical_json(client)).hexdigest()[:32]


def canonical_json(value: Any) -> bytes:
    """Sorted, compact, ASCII-only JSON of a validated record: the fingerprint's input."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # lone surrogates, integers beyond 64 bits
        text = b"\x7f"  # not printable: take the json route below
    if text.isascii() and b"\x7f" not in text:
        return text
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
