"""The floor bench's pure parts: its transform codec, figures, ratios and Quix venv marker."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.faust_floor import AIOKAFKA, CONFLUENT, FAUST, QUIX, comparisons, parse_figures
from bench.floorcodec import OrderCodec, discount
from bench.quixapp import Clock
from bench.quixenv import MARKER, QUIX_SPEC, last_line, ready
from pipelines.serde import SingleObjectSerde
from producers.generator import GeneratorConfig, OrderGenerator

ORDER = "sluice.orders.OrderPlaced"


def _orders(count: int) -> list[dict]:
    generator = OrderGenerator(GeneratorConfig(seed=3, invalid_fraction=0.0), clock=lambda: 1.7e9)
    return [generator.make(n) for n in range(count)]


def test_codec_writes_and_reads_what_sluice_serde_does():
    serde, codec = SingleObjectSerde(), OrderCodec()
    for order in _orders(50):
        wire = serde.encode(ORDER, order)
        assert codec.encode(order) == wire
        assert codec.decode(wire) == order


def test_transform_is_a_discount_sluice_can_read_back():
    serde, codec = SingleObjectSerde(), OrderCodec()
    for order in _orders(50):
        changed = serde.decode(codec.transform(serde.encode(ORDER, order)))
        assert changed == discount(order)
        assert changed != order
        assert changed["total_cents"] == sum(
            line["quantity"] * line["unit_price_cents"] for line in changed["lines"]
        )


def test_discount_takes_ten_percent_off_each_unit_price_rounding_down():
    order = {"lines": [{"sku": "A", "quantity": 3, "unit_price_cents": 999}], "total_cents": 2997}
    assert discount(order) == {
        "lines": [{"sku": "A", "quantity": 3, "unit_price_cents": 899}],
        "total_cents": 2697,
    }
    assert order["lines"][0]["unit_price_cents"] == 999  # the input is left alone


def test_codec_refuses_bytes_of_another_schema():
    with pytest.raises(ValueError, match="not an OrderPlaced v2"):
        OrderCodec().decode(b"\xc3\x01" + bytes(8) + b"\x00")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5500.0 0.000178\n", (5500.0, 0.000178)),
        ("", None),
        ("5500.0", None),  # still being written
        ("5500.0 0.0001", None),  # no newline yet
    ],
)
def test_parse_figures_waits_for_a_complete_line(text, expected):
    assert parse_figures(text) == expected


def test_comparisons_give_faust_against_quix_and_bare_aiokafka():
    rates = {FAUST: 5_000.0, QUIX: 50_000.0, AIOKAFKA: 70_000.0, CONFLUENT: 300_000.0}
    cpu = {FAUST: 180e-6, QUIX: 18e-6, AIOKAFKA: 12e-6, CONFLUENT: 3e-6}
    assert comparisons(rates, cpu, FAUST) == [
        "  Faust / Quix Streams 3.28.1: 0.10 of its records/s, 10.0x its CPU per record",
        "  Faust / bare aiokafka loop: 0.07 of its records/s, 15.0x its CPU per record",
    ]


def test_comparisons_leave_out_a_peer_that_did_not_run():
    rates, cpu = {FAUST: 5_000.0, AIOKAFKA: 70_000.0}, {FAUST: 180e-6, AIOKAFKA: 12e-6}
    assert [line.split(":")[0] for line in comparisons(rates, cpu, FAUST)] == [
        "  Faust / bare aiokafka loop"
    ]


def test_quix_clock_times_records_after_the_first_and_stops_once(tmp_path: Path):
    stops: list[bool] = []
    out = tmp_path / "figures"
    clock = Clock(4, out, lambda: stops.append(True))
    for offset in range(3):
        clock("t", 0, offset)
    assert not out.exists()
    assert stops == []
    clock("t", 0, 3)
    rate, cpu = parse_figures(out.read_text()) or (0.0, -1.0)
    assert rate > 0
    assert cpu >= 0
    assert stops == [True]


def test_quix_venv_is_ready_only_when_completed_for_the_same_spec(tmp_path: Path):
    assert not ready(tmp_path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").touch()
    assert not ready(tmp_path)  # created, pip never finished
    (tmp_path / MARKER).write_text(QUIX_SPEC + "\n")
    assert ready(tmp_path)
    assert not ready(tmp_path, "quixstreams==3.27.0")


def test_last_line_is_the_reason_pip_gives():
    assert last_line("Collecting x\n\nERROR: No matching distribution\n\n") == (
        "ERROR: No matching distribution"
    )
    assert last_line("") == "no output"
