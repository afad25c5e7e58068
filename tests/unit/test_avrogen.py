"""The generated encoders write exactly what fastavro writes, and refuse what it refuses."""

from __future__ import annotations

import io
import string
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.avrogen import compile_encoder, write_long
from pipelines.schemas import default_store, strip_logical_types
from tests.unit.samples import SAMPLES


def _fastavro(name: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, default_store().latest(name).parsed, record)
    return buf.getvalue()


def _ours(name: str) -> Any:
    return compile_encoder(strip_logical_types(default_store().latest(name).raw))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_byte_identical_to_fastavro(name: str) -> None:
    assert _ours(name)(SAMPLES[name]) == _fastavro(name, SAMPLES[name])


def test_header_is_prefixed() -> None:
    name = "sluice.orders.OrderStatus"
    encoder = compile_encoder(strip_logical_types(default_store().latest(name).raw), b"HDR")
    assert encoder(SAMPLES[name]) == b"HDR" + _fastavro(name, SAMPLES[name])


@pytest.mark.parametrize(
    "value", [0, 1, -1, 63, -64, 64, 8191, 16383, 16384, 2**31, -(2**31), 2**63 - 1, -(2**63)]
)
def test_longs_match_the_spec_zigzag_varint(value: int) -> None:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, "long", value)
    assert write_long(value) == buf.getvalue()


_text = st.text(string.printable + "éü漢字😀", max_size=40)
_i32 = st.integers(-(2**31), 2**31 - 1)
_i64 = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=300, deadline=None)
@given(
    window=st.fixed_dictionaries(
        {
            "window_key": _text,
            "metric": _text,
            "dimension": _text,
            "window_start": _i64,
            "window_end": _i64,
            "count": _i64,
            "sum": _i64,
            "top": st.lists(st.fixed_dictionaries({"key": _text, "value": _i64}), max_size=5),
            "percentiles": st.dictionaries(_text, _i64, max_size=4),
            "late_events": _i64,
        }
    )
)
def test_window_aggregates_match_fastavro(window: dict[str, Any]) -> None:
    name = "sluice.analytics.WindowAggregate"
    assert _ours(name)(window) == _fastavro(name, window)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(
        st.fixed_dictionaries({"sku": _text, "quantity": _i32, "unit_price_cents": _i64}),
        max_size=8,
    ),
    ref=st.none() | _text,
    total=_i64,
)
def test_orders_match_fastavro(lines: list[dict[str, Any]], ref: str | None, total: int) -> None:
    name = "sluice.orders.OrderPlaced"
    record = {**SAMPLES[name], "lines": lines, "client_ref": ref, "total_cents": total}
    assert _ours(name)(record) == _fastavro(name, record)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"total_cents": "12"}, TypeError),
        ({"channel": "FAX"}, KeyError),
        ({"client_ref": 5}, TypeError),
        ({"total_cents": 2**64}, ValueError),
        ({"lines": [{"sku": "a", "quantity": 2**31, "unit_price_cents": 1}]}, ValueError),
    ],
)
def test_bad_values_raise(change: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        _ours("sluice.orders.OrderPlaced")({**SAMPLES["sluice.orders.OrderPlaced"], **change})


def test_missing_required_field_raises() -> None:
    record = dict(SAMPLES["sluice.orders.OrderPlaced"])
    del record["currency"]
    with pytest.raises(KeyError):
        _ours("sluice.orders.OrderPlaced")(record)
