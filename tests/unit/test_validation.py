from __future__ import annotations

from pipelines.serde import SingleObjectSerde
from tests.unit.samples import SAMPLES

PLACED = "sluice.orders.OrderPlaced"
serde = SingleObjectSerde()


def test_valid_samples_have_no_problems() -> None:
    for name, record in SAMPLES.items():
        assert serde.validate(name, record) == [], name


def test_every_problem_is_reported_with_its_path() -> None:
    bad = {
        **SAMPLES[PLACED],
        "lines": [{"sku": 5, "quantity": "2", "unit_price_cents": 1, "x": 1}],
        "channel": "FAX",
        "surprise": True,
    }
    del bad["currency"]
    problems = serde.validate(PLACED, bad)
    assert "surprise: unknown field" in problems
    assert "currency: required field is missing" in problems
    assert "lines[0].x: unknown field" in problems
    assert any(p.startswith("lines[0].sku: must be string") for p in problems)
    assert any(p.startswith("lines[0].quantity: must be an integer") for p in problems)
    assert any(p.startswith("channel: must be one of WEB") for p in problems)


def test_fields_with_defaults_may_be_omitted() -> None:
    record = {k: v for k, v in SAMPLES[PLACED].items() if k not in ("client_ref", "channel")}
    assert serde.validate(PLACED, record) == []


def test_int_range_and_booleans_are_checked() -> None:
    line = {"sku": "a", "quantity": 2**31, "unit_price_cents": True}
    problems = serde.validate(PLACED, {**SAMPLES[PLACED], "lines": [line]})
    assert "lines[0].quantity: 2147483648 is out of range for int" in problems
    assert any(p.startswith("lines[0].unit_price_cents: must be an integer") for p in problems)


def test_union_mismatch_names_the_branches() -> None:
    problems = serde.validate(PLACED, {**SAMPLES[PLACED], "client_ref": 7})
    assert problems == ["client_ref: must be one of: null, string; got number 7"]
