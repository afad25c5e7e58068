"""The bulk loader's validation pass: whatever the encoder would refuse is found first."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pipelines.catalog import get as topic_spec
from pipelines.serde import EncodeError, SingleObjectSerde
from producers.jsonl import InvalidInput, load, text_problems
from tests.unit.samples import SAMPLES

PLACED = "sluice.orders.OrderPlaced"
SPEC = topic_spec("orders.placed")


def _file(tmp_path: Path, records: list[Any]) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_every_valid_line_is_encoded_in_the_validation_pass(tmp_path: Path) -> None:
    serde = SingleObjectSerde()
    records = [{**SAMPLES[PLACED], "order_id": f"O-{n}"} for n in range(3)]
    loaded = load(_file(tmp_path, records), SPEC, serde)
    assert loaded.problems == []
    assert [(e.number, e.key) for e in loaded.records] == [(1, b"O-0"), (2, b"O-1"), (3, b"O-2")]
    assert [serde.decode(e.value, PLACED)["order_id"] for e in loaded.records] == [
        "O-0",
        "O-1",
        "O-2",
    ]


def test_a_lone_surrogate_is_named_by_line_and_field(tmp_path: Path) -> None:
    bad = {**SAMPLES[PLACED], "customer_id": "C-\ud800"}
    deep = {**SAMPLES[PLACED], "lines": [{**SAMPLES[PLACED]["lines"][0], "sku": "\udc00"}]}
    loaded = load(_file(tmp_path, [SAMPLES[PLACED], bad, deep]), SPEC, SingleObjectSerde())
    assert [e.number for e in loaded.records] == [1]
    assert loaded.problems == [
        (2, "customer_id: text must be valid Unicode (it has a lone surrogate)"),
        (3, "lines[0].sku: text must be valid Unicode (it has a lone surrogate)"),
    ]


def test_a_surrogate_in_a_field_name_is_shown_escaped(tmp_path: Path) -> None:
    loaded = load(_file(tmp_path, [{**SAMPLES[PLACED], "x\ud800": 1}]), SPEC, SingleObjectSerde())
    ((number, reason),) = loaded.problems
    assert number == 1
    assert "x\\ud800: a field name must be valid Unicode" in reason
    reason.encode("utf-8")  # printable: no surrogate left in the message


def test_event_times_outside_the_range_are_refused_before_sending(tmp_path: Path) -> None:
    early = {**SAMPLES[PLACED], "placed_at": -9223372036854775808}
    loaded = load(_file(tmp_path, [early]), SPEC, SingleObjectSerde())
    assert loaded.problems[0][0] == 1
    assert "placed_at: event time -9223372036854775808 is outside" in loaded.problems[0][1]


def test_a_file_that_is_not_utf8_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(json.dumps(SAMPLES[PLACED]).encode() + b"\n\xff\xfe\n")
    with pytest.raises(InvalidInput, match=r"in.jsonl:2: not UTF-8 text \(byte 1\)"):
        load(path, SPEC, SingleObjectSerde())


class _RefusingSerde(SingleObjectSerde):
    """A serde whose encoder fails for a reason no line explains (a registry refusing)."""

    def encode(self, name: str, record: Mapping[str, Any], *, topic: str | None = None) -> bytes:
        raise EncodeError("schema registry refused OrderPlaced under x-value: 503")


def test_an_encoder_failure_no_line_explains_stops_the_whole_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"line 1: schema registry refused.*nothing was sent"):
        load(_file(tmp_path, [SAMPLES[PLACED]]), SPEC, _RefusingSerde())


def test_text_problems_walks_objects_and_arrays() -> None:
    assert text_problems({"a": ["ok", {"b": "\ud800"}]}) == [
        "a[1].b: text must be valid Unicode (it has a lone surrogate)"
    ]
    assert text_problems("fine") == []
