"""Producer scripts and `sluice consume` against a real broker."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Producer

from consumers.tail import StartAt, read
from pipelines.cli import run
from pipelines.serde import SingleObjectSerde
from pipelines.settings import Settings
from producers.generator import GeneratorConfig
from producers.orders import OrderRun, produce_orders


def _env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("SLUICE_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("SLUICE_PARTITIONS", str(settings.partitions))


def test_ten_thousand_orders_come_back_exactly_and_in_key_order(
    pipeline_settings: Settings,
) -> None:
    config = GeneratorConfig(seed=11, invalid_fraction=0.05)
    stats = produce_orders(pipeline_settings, OrderRun(count=10_000, generator=config))
    assert (stats.sent, stats.acked, stats.failed) == (10_000, 10_000, 0)
    rows = list(read(pipeline_settings, "orders.placed", StartAt("beginning")))
    assert len(rows) == 10_000
    assert not [r for r in rows if "error" in r]
    ids = [r["value"]["order_id"] for r in rows]
    assert sorted(ids) == sorted(f"O-11-{n:08d}" for n in range(10_000))
    by_partition: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        assert r["key"] == r["value"]["order_id"]
        by_partition[r["partition"]].append(r["offset"])
    assert len(by_partition) == pipeline_settings.partitions
    for offsets in by_partition.values():  # per-partition (so per-key) order is kept
        assert offsets == sorted(offsets)


def test_produce_orders_cli_summary_and_json(
    pipeline_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _env(monkeypatch, pipeline_settings)
    assert run(["produce", "orders", "--count", "300", "--rate", "2000", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sent"] == summary["acknowledged"] == 300
    assert summary["failed"] == 0
    assert summary["delivery_p99_ms"] is not None


def test_jsonl_is_all_or_nothing(
    pipeline_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _env(monkeypatch, pipeline_settings)
    good = {"order_id": "J-1", "order_id_x": None}
    del good["order_id_x"]
    good = {
        "order_id": "J-1",
        "customer_id": "C-1",
        "lines": [],
        "currency": "EUR",
        "total_cents": 0,
        "placed_at": 1,
    }
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n" + json.dumps({**good, "lines": 5}) + "\n")
    assert run(["produce", "--topic", "orders.placed", "--from-file", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:2: malformed JSON" in err
    assert f"{path}:3: lines: must be an array" in err
    assert "nothing was sent" in err
    assert list(read(pipeline_settings, "orders.placed", StartAt("beginning"))) == []

    assert (
        run(
            ["produce", "-t", "orders.placed", "--from-file", str(path), "--skip-invalid", "--json"]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["acknowledged"] == 1
    rows = list(read(pipeline_settings, "orders.placed", StartAt("beginning")))
    assert [r["value"]["order_id"] for r in rows] == ["J-1"]
    assert rows[0]["value"]["client_ref"] is None  # filled by the schema default


def test_a_line_only_the_encoder_refuses_sends_nothing_and_is_named(
    pipeline_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Line 4 holds a lone surrogate escape: valid JSON and a valid `string` to the schema
    check, but no UTF-8 encoder takes it. It used to send lines 1-3, then fail unnamed."""
    _env(monkeypatch, pipeline_settings)
    path = tmp_path / "orders.jsonl"
    lines = [
        json.dumps(
            {
                "order_id": f"S-{n}",
                "customer_id": "C-\ud800" if n == 4 else "C-1",
                "lines": [],
                "currency": "EUR",
                "total_cents": 0,
                "placed_at": 1,
            }
        )
        for n in range(1, 6)
    ]
    assert "\\ud800" in lines[3]  # the file holds the JSON escape itself
    path.write_text("\n".join(lines) + "\n")

    assert run(["produce", "-t", "orders.placed", "--from-file", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:4: customer_id: text must be valid Unicode" in err
    assert "nothing was sent" in err
    assert "Traceback" not in err
    assert list(read(pipeline_settings, "orders.placed", StartAt("beginning"))) == []

    argv = ["produce", "-t", "orders.placed", "--from-file", str(path), "--skip-invalid"]
    assert run([*argv, "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert (summary["acknowledged"], summary["skipped_lines"]) == (4, [4])
    assert f"skipped {path}:4: customer_id" in err
    rows = list(read(pipeline_settings, "orders.placed", StartAt("beginning")))
    assert sorted(r["value"]["order_id"] for r in rows) == ["S-1", "S-2", "S-3", "S-5"]


def test_consume_shows_undecodable_records_with_the_reason(
    pipeline_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _env(monkeypatch, pipeline_settings)
    topic = pipeline_settings.topic("orders.placed")
    producer = Producer(pipeline_settings.confluent_producer())
    producer.produce(topic, key=b"bad", value=b"\x00not avro at all")
    sample = {
        "order_id": "G-1",
        "customer_id": "C-1",
        "lines": [],
        "currency": "EUR",
        "total_cents": 0,
        "placed_at": 5,
    }
    producer.produce(
        topic, key=b"G-1", value=SingleObjectSerde().encode("sluice.orders.OrderPlaced", sample)
    )
    producer.flush(10)
    assert run(["consume", "orders.placed", "--from-beginning", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2
    bad = next(r for r in rows if r["key"] == "bad")
    assert bad["error"].startswith("undecodable: not Avro single-object encoding")
    good = next(r for r in rows if r["key"] == "G-1")
    assert good["value"]["order_id"] == "G-1"
    assert {"partition", "offset", "timestamp"} <= good.keys()


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["produce", "orders", "--rate", "-3"], 2, "-3"),
        (
            ["produce", "-t", "orders.placed", "--from-file", "/nonexistent.jsonl"],
            2,
            "does not exist",
        ),
        (
            ["produce", "-t", "orders.nope", "--from-file", "pyproject.toml"],
            1,
            "unknown topic 'orders.nope'",
        ),
        (["consume", "no.such.topic", "--from-beginning"], 1, "unknown topic 'no.such.topic'"),
        (["consume", "orders.placed", "--from-time", "yesterday"], 2, "not an ISO-8601 time"),
    ],
)
def test_bad_input_is_one_clear_line(
    pipeline_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    needle: str,
) -> None:
    _env(monkeypatch, pipeline_settings)
    assert run(argv) == code
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_producing_to_a_missing_topic_names_the_fix(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("SLUICE_TOPIC_PREFIX", "never-created.")
    assert run(["produce", "orders", "--count", "1"]) == 1
    assert "sluice topics create" in capsys.readouterr().err
