"""The compiled check answers exactly as the full validator does, on every schema."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.schemas import default_store
from pipelines.validation import validate
from producers.intake.fastcheck import compile_check, with_fast_path
from producers.intake.validation import PLACED

STORE = default_store()
PLACED_RAW = STORE.latest(PLACED).raw
VALID: dict[str, Any] = {
    "order_id": "O-1",
    "customer_id": "C-1",
    "lines": [{"sku": "SKU-00001", "quantity": 2, "unit_price_cents": 100}],
    "currency": "EUR",
    "total_cents": 200,
    "placed_at": 1_700_000_000_000,
    "channel": "WEB",
    "client_ref": None,
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.sampled_from(["WEB", "MOBILE", "nope", "SKU-00001"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["sku", "quantity", "x", "order_id"]), inner, max_size=3),
    ),
    max_leaves=8,
)


def agree(schema: Any, value: Any) -> None:
    assert compile_check(schema)(value) == (validate(schema, value) == []), value


def test_a_valid_order_passes_and_known_problems_fail() -> None:
    check = compile_check(PLACED_RAW)
    assert check(VALID)
    assert check({k: v for k, v in VALID.items() if k not in ("channel", "client_ref")})
    for broken in (
        {**VALID, "coupon": 1},
        {**VALID, "total_cents": True},
        {**VALID, "total_cents": 2**63},
        {**VALID, "channel": "FAX"},
        {**VALID, "lines": [{"sku": "S", "quantity": 2**31, "unit_price_cents": 1}]},
        {k: v for k, v in VALID.items() if k != "lines"},
    ):
        assert not check(broken)
        agree(PLACED_RAW, broken)


@settings(max_examples=400)
@given(field=st.sampled_from(sorted(VALID)), value=json_values, drop=st.booleans())
def test_same_answer_as_the_validator_on_mutated_orders(field: str, value: Any, drop: bool) -> None:
    record = copy.deepcopy(VALID)
    if drop:
        del record[field]
    else:
        record[field] = value
    agree(PLACED_RAW, record)
    line = copy.deepcopy(VALID)
    line["lines"][0][field if field in ("sku", "quantity") else "extra"] = value
    agree(PLACED_RAW, line)


@settings(max_examples=300)
@given(name=st.sampled_from(STORE.names()), value=json_values)
def test_same_answer_as_the_validator_on_any_value_and_schema(name: str, value: Any) -> None:
    agree(STORE.latest(name).raw, value)


def test_the_fast_path_falls_back_for_the_problem_list() -> None:
    calls: list[str] = []

    def slow(name: str, record: Any) -> list[str]:
        calls.append(name)
        return validate(STORE.latest(name).raw, record)

    run = with_fast_path(slow, STORE, (PLACED,))
    assert run(PLACED, VALID) == []
    assert calls == []
    assert run(PLACED, {**VALID, "coupon": 1}) == ["coupon: unknown field"]
    assert calls == [PLACED]
