"""Where a dead letter of orders.dlq or analytics.dlq may go back to (no broker)."""

from __future__ import annotations

import pytest

from consumers.dlq import _source_letter
from consumers.redrive import SOURCES, Letter
from pipelines.acls import ROLES
from pipelines.settings import Settings
from pipelines.stages.windows import SOURCES as ANALYTICS_READS

SETTINGS = Settings(topic_prefix="demo-1.")


def _letter(dlq: str, source: str | None) -> Letter:
    headers = {"sluice.source.topic": source} if source is not None else {}
    return Letter(dlq, 0, 5, 0, b"k", b"v", headers)


@pytest.mark.parametrize(
    ("dlq", "header", "source"),
    [
        ("orders.dlq", "inventory.reservations", "inventory.reservations"),  # catalog name
        ("orders.dlq", "demo-1.inventory.reservations", "inventory.reservations"),  # physical
        ("orders.dlq", "orders.confirmed", None),  # the orders stage does not read it
        ("orders.dlq", "other-2.orders.placed", None),  # another pipeline's topic
        ("orders.dlq", None, None),  # no header: nowhere to go
        ("analytics.dlq", "demo-1.notifications.results", "notifications.results"),
        ("analytics.dlq", "inventory.results", None),
    ],
)
def test_a_letter_goes_back_only_to_a_topic_its_stage_reads(
    dlq: str, header: str | None, source: str | None
) -> None:
    assert _letter(dlq, header).source(SETTINGS) == source


def test_the_sources_are_what_each_stage_reads() -> None:
    assert set(SOURCES["orders.dlq"]) <= set(ROLES["orders"].reads)
    assert SOURCES["analytics.dlq"] == tuple(ANALYTICS_READS)


def test_tokens_name_the_dlq_and_the_letter() -> None:
    assert _letter("orders.dlq", "orders.placed").token == "orders.dlq:0:5"


def test_the_list_says_which_letters_cannot_go_back() -> None:
    row = {"partition": 0, "offset": 1, "timestamp": 7, "key": "k", "value": {"x": 1}}
    headers = {"sluice.source.topic": "demo-1.orders.placed", "sluice.error": "why"}
    good = _source_letter(SETTINGS, "orders.dlq", {**row, "headers": headers})
    assert good.summary()["redrivable"]
    assert good.summary()["source"] == "demo-1.orders.placed[None]@None"
    garbage = _source_letter(SETTINGS, "orders.dlq", {**row, "error": "undecodable: bad magic"})
    assert garbage.summary()["undecodable"] == "undecodable: bad magic"
    null = _source_letter(SETTINGS, "orders.dlq", {**row, "value": None, "headers": headers})
    assert null.problem == "a null value"


def test_dlq_list_shows_every_dlq_in_one_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import consumers.dlq
    from pipelines.cli import run

    row = {"partition": 0, "offset": 1, "timestamp": 1_795_000_000_000, "key": "SKU-1"}
    headers = {"sluice.source.topic": "inventory.reservations", "sluice.error": "[registry] down"}
    letters = [
        _source_letter(SETTINGS, "orders.dlq", {**row, "value": {"x": 1}, "headers": headers}),
        _source_letter(SETTINGS, "analytics.dlq", {**row, "error": "undecodable: bad magic"}),
    ]
    asked: list[tuple[str, ...]] = []

    def recent(_settings: Settings, limit: int, dlqs: tuple[str, ...]) -> tuple[list, int]:
        asked.append(dlqs)
        return letters, 2

    monkeypatch.setattr(consumers.dlq, "recent", recent)
    monkeypatch.setenv("COLUMNS", "200")
    assert run(["dlq", "list"]) == 0
    out, err = capsys.readouterr()
    assert "orders.dlq" in out
    assert "[registry] down" in out  # a reason is text, never markup
    assert "not redrivable: undecodable: bad magic" in out
    assert "2 shown of 2 dead letters" in err
    assert run(["dlq", "list", "--dlq", "analytics"]) == 0
    assert asked == [("orders.dlq", "notifications.dlq", "analytics.dlq"), ("analytics.dlq",)]
