"""The intake's body-to-record step: filling, every field problem at once, limits, digests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.eventtime import MAX_EVENT_MS, MIN_EVENT_MS
from pipelines.schemas import default_store
from pipelines.serde import SingleObjectSerde
from producers.intake.fastcheck import with_fast_path
from producers.intake.validation import (
    MAX_PROBLEMS,
    PLACED,
    OrderRequest,
    Rejection,
    build_order,
    canonical_json,
    check_key,
    fingerprint,
    parse_json,
    read_order,
)

SERDE = SingleObjectSerde()
NOW = 1_790_000_000_000


def body(**changes: object) -> dict[str, object]:
    order: dict[str, object] = {
        "customer_id": "C-00001",
        "lines": [{"sku": "SKU-00001", "quantity": 2, "unit_price_cents": 150}],
        "currency": "EUR",
        "total_cents": 300,
    }
    order.update(changes)
    return {k: v for k, v in order.items() if v is not None}


def build(payload: object, key: str | None = None, max_lines: int = 100) -> OrderRequest:
    return build_order(
        payload,
        key=key,
        max_lines=max_lines,
        now_ms=NOW,
        validate=SERDE.validate,
        new_id=lambda: "O-generated",
    )


def rejected(payload: object, **kw: object) -> Rejection:
    with pytest.raises(Rejection) as caught:
        build(payload, **kw)  # type: ignore[arg-type]
    return caught.value


def test_server_fills_id_time_channel_and_client_ref() -> None:
    order = build(body(), key="key-1")
    assert order.record["order_id"] == "O-generated"
    assert order.record["placed_at"] == NOW
    assert order.record["channel"] == "WEB"
    assert order.record["client_ref"] == "key-1"
    assert order.generated == ("order_id", "placed_at")
    SERDE.encode("sluice.orders.OrderPlaced", order.record)  # the filled record encodes


def test_client_values_are_kept() -> None:
    order = build(body(order_id="shop-42", placed_at=123, channel="MOBILE"))
    assert order.record["order_id"] == "shop-42"
    assert order.record["placed_at"] == 123
    assert order.record["channel"] == "MOBILE"
    assert order.record["client_ref"] is None
    assert order.generated == ()


def test_every_field_problem_is_listed() -> None:
    bad = body(customer_id=7, total_cents=2.5, colour="red")
    bad["lines"] = [{"sku": "SKU-1", "quantity": "2"}]
    problems = rejected(bad).problems
    assert "customer_id: must be string, got number 7" in problems
    assert "total_cents: must be an integer (long), got number 2.5" in problems
    assert "colour: unknown field" in problems
    assert "lines[0].quantity: must be an integer (int), got string '2'" in problems
    assert "lines[0].unit_price_cents: required field is missing" in problems
    assert len(problems) == 5


def test_missing_required_fields_and_wrong_enum() -> None:
    error = rejected({"channel": "FAX"})
    assert error.status == 422
    assert "customer_id: required field is missing" in error.problems
    assert "total_cents: required field is missing" in error.problems
    assert any(p.startswith("channel: must be one of WEB") for p in error.problems)


def test_client_ref_is_the_servers() -> None:
    problems = rejected(body(client_ref="mine")).problems
    assert problems == [
        "client_ref: set by the server (from the Idempotency-Key header); do not send it"
    ]


@pytest.mark.parametrize("order_id", ["", "-lead", "has space", "x" * 65, "slash/no", "é"])
def test_order_ids_must_be_plain(order_id: str) -> None:
    assert any(p.startswith("order_id:") for p in rejected(body(order_id=order_id)).problems)


def test_line_limit() -> None:
    lines = [{"sku": f"SKU-{i:05d}", "quantity": 1, "unit_price_cents": 1} for i in range(4)]
    assert build(body(lines=lines, total_cents=4), max_lines=4)
    error = rejected(body(lines=[*lines, lines[0]], total_cents=5), max_lines=4)
    assert error.problems == ["lines: at most 4 lines per order, got 5"]


def test_problem_list_is_capped() -> None:
    lines = [{"sku": i} for i in range(100)]
    problems = rejected(body(lines=lines)).problems
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[-1].startswith("... and ")


@pytest.mark.parametrize("payload", [[], "order", 3, None])
def test_the_body_must_be_an_object(payload: object) -> None:
    error = rejected(payload)
    assert (error.status, error.problems) == (422, ["(record): the order must be a JSON object"])


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b'{"customer_id": ', "malformed JSON: Expecting value at line 1 column 17"),
        (b"{'single': 1}", "malformed JSON"),
        (b"\xff\xfe\x00", "malformed JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "malformed JSON: nested too deeply"),
        (b'{"total_cents": ' + b"9" * 5000 + b"}", "more than 4300 digits"),
        (b"[" + b"1" * 4301 + b"]", "more than 4300 digits"),
    ],
)
def test_malformed_json_is_a_400(raw: bytes, says: str) -> None:
    with pytest.raises(Rejection) as caught:
        parse_json(raw)
    assert caught.value.status == 400
    assert says in caught.value.error


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "tab\tkey", "ключ"])
def test_bad_idempotency_keys(key: str) -> None:
    with pytest.raises(Rejection) as caught:
        check_key(key)
    assert caught.value.status == 400


def test_good_idempotency_keys() -> None:
    assert check_key(None) is None
    assert check_key("a") == "a"
    assert check_key("x" * 255) == "x" * 255
    assert check_key("order:2026-11-28/7f3a") == "order:2026-11-28/7f3a"


def test_fingerprint_ignores_key_order_and_server_values() -> None:
    one = build(body(), key="k")
    reordered = json.loads(json.dumps(body(), sort_keys=True))
    two = build_order(
        dict(reversed(list(reordered.items()))),
        key="k",
        max_lines=100,
        now_ms=NOW + 5000,  # another time and id: the server's, not the client's
        validate=SERDE.validate,
        new_id=lambda: "O-other",
    )
    assert one.fingerprint == two.fingerprint
    assert one.fingerprint != build(body(total_cents=301), key="k").fingerprint
    assert one.fingerprint != build(body(placed_at=NOW), key="k").fingerprint
    assert one.fingerprint == build(body(channel="WEB"), key="k").fingerprint  # the default


def test_fingerprint_only_with_a_key() -> None:
    assert build(body()).fingerprint == ""
    assert len(fingerprint({"a": 1})) == 32


#: What a validated OrderPlaced record can hold: text, Avro ints and longs, null, lists
#: and string-keyed objects (no floats: the schema has none).
LONGS = st.integers(-(2**63), 2**63 - 1)
RECORDS = st.recursive(
    st.none() | st.booleans() | LONGS | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(RECORDS)
def test_the_fast_canonical_json_is_the_json_modules_text(value: Any) -> None:
    """Digests travel in Kafka headers across restarts: the digested text never changes."""
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert canonical_json(value) == expected.encode()


@pytest.mark.parametrize(
    "text",
    ["plain", "caf\u00e9 \u2603", '\x00\x1f\x7f"\\/\b\f\n\r\t', "\ud800 lone", "\U0001f600"],
)
def test_canonical_json_for_every_kind_of_text(text: str) -> None:
    record = {"customer_id": text, "lines": [{"sku": text, "quantity": 1}], "big": 2**63 - 1}
    expected = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert canonical_json(record) == expected.encode()


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "\\ud800"}',  # a lone surrogate escape: json accepts it, orjson does not
        b'{"a": NaN, "b": Infinity}',
        b'\xef\xbb\xbf{"a": 1}',  # a UTF-8 byte order mark
        '{"a": "\u00e9"}'.encode("utf-16"),
        b'{"a": 1, "a": 2}',
        b'{"a": [1, {"b": null}], "c": "\\u00e9"}',
    ],
)
def test_parse_json_decides_as_the_json_module_does(raw: bytes) -> None:
    expected = json.loads(raw)
    parsed = parse_json(raw)
    assert json.dumps(parsed) == json.dumps(expected)


@pytest.mark.parametrize(
    ("total", "problem"),
    [
        ("123456789012345678901234567890", "total_cents: 123456789012345678901234567890 is out of"),
        ("-9223372036854775809", "total_cents: -9223372036854775809 is out of range"),
        ("1.25", "total_cents: must be an integer (long), got number 1.25"),
    ],
)
def test_a_422_names_the_number_the_client_sent(total: str, problem: str) -> None:
    """orjson reads integers beyond 64 bits as floats; the answer still quotes the integer."""
    raw = json.dumps(body(total_cents=0)).replace('"total_cents": 0', f'"total_cents": {total}')
    with pytest.raises(Rejection) as caught:
        read_order(raw.encode(), key=None, max_lines=100, now_ms=NOW, validate=SERDE.validate)
    assert caught.value.status == 422
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_read_order_accepts_what_build_order_accepts() -> None:
    raw = json.dumps(body()).encode()
    order = read_order(
        raw,
        key="k",
        max_lines=100,
        now_ms=NOW,
        validate=SERDE.validate,
        new_id=lambda: "O-generated",
    )
    assert order == build(body(), key="k")


# --- event time -------------------------------------------------------------------------

FAST = with_fast_path(SERDE.validate, default_store(), (PLACED,))


@pytest.mark.parametrize("placed_at", [-(2**63), -1, MAX_EVENT_MS + 1, 2**63 - 1])
def test_an_event_time_outside_the_range_is_a_422(placed_at: int) -> None:
    for validate in (SERDE.validate, FAST):
        with pytest.raises(Rejection) as caught:
            build_order(
                body(placed_at=placed_at), key=None, max_lines=100, now_ms=NOW, validate=validate
            )
        assert caught.value.status == 422
        assert caught.value.problems == [
            f"placed_at: event time {placed_at} is outside the accepted range "
            f"{MIN_EVENT_MS}..{MAX_EVENT_MS} (1970-01-01 to 9999-12-31 in epoch milliseconds)"
        ]


def test_the_ends_of_the_event_time_range_are_accepted() -> None:
    for placed_at in (MIN_EVENT_MS, MAX_EVENT_MS):
        assert build(body(placed_at=placed_at)).record["placed_at"] == placed_at


def test_an_event_time_problem_comes_with_every_other_problem_once() -> None:
    problems = rejected(body(placed_at=-(2**63), total_cents="ten", coupon=1)).problems
    assert len(problems) == 3, problems
    assert sum(p.startswith("placed_at: event time") for p in problems) == 1
    beyond = rejected(body(placed_at=2**64)).problems  # the schema's own problem, not two
    assert beyond == [f"placed_at: {2**64} is out of range for long"]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(-(2**64), 2**64) | st.sampled_from([-(2**63), 0, MAX_EVENT_MS, MAX_EVENT_MS + 1])
)
def test_fast_and_full_validation_agree_on_event_times(placed_at: int) -> None:
    """The compiled check and the full walk answer the same, and 422 exactly outside the range."""
    outcomes = []
    for validate in (SERDE.validate, FAST):
        try:
            build_order(
                body(placed_at=placed_at), key=None, max_lines=100, now_ms=NOW, validate=validate
            )
            outcomes.append(None)
        except Rejection as exc:
            outcomes.append(exc.problems)
    assert outcomes[0] == outcomes[1]
    assert (outcomes[0] is None) == (MIN_EVENT_MS <= placed_at <= MAX_EVENT_MS)
