from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.cli import run
from pipelines.compat import check_store, find_problems
from pipelines.schemas import SchemaStore, default_store, schemas_dir


def test_the_repository_schemas_evolve_fully_compatibly() -> None:
    results = check_store(default_store())
    assert results, "at least one evolution step (OrderPlaced v1 -> v2) is checked"
    assert [r for r in results if r.problems] == []


def _evolve(tmp_path: Path, change: object) -> Path:
    v1 = json.loads((schemas_dir() / "OrderPlaced.v1.avsc").read_text())
    if change is _enum_without_default:  # the old reader must lack an enum default too
        channel = next(f for f in v1["fields"] if f["name"] == "channel")
        del channel["type"]["default"]
    v2 = json.loads(json.dumps(v1))
    change(v2)  # type: ignore[operator]
    (tmp_path / "OrderPlaced.v1.avsc").write_text(json.dumps(v1))
    (tmp_path / "OrderPlaced.v2.avsc").write_text(json.dumps(v2))
    return tmp_path


def _drop_currency(s: dict) -> None:
    s["fields"] = [f for f in s["fields"] if f["name"] != "currency"]


def _new_required_field(s: dict) -> None:
    s["fields"].append({"name": "coupon", "type": "string", "doc": "no default"})


def _retype_total(s: dict) -> None:
    next(f for f in s["fields"] if f["name"] == "total_cents")["type"] = "string"


def _retype_line_price(s: dict) -> None:
    lines = next(f for f in s["fields"] if f["name"] == "lines")
    price = next(f for f in lines["type"]["items"]["fields"] if f["name"] == "unit_price_cents")
    price["type"] = "string"


def _enum_without_default(s: dict) -> None:
    channel = next(f for f in s["fields"] if f["name"] == "channel")
    channel["type"]["symbols"] = [*channel["type"]["symbols"], "KIOSK"]


@pytest.mark.parametrize(
    ("change", "direction", "field"),
    [
        (_drop_currency, "forward", "currency"),
        (_new_required_field, "backward", "coupon"),
        (_retype_total, "backward", "total_cents"),
        (_retype_total, "forward", "total_cents"),
        (_retype_line_price, "backward", "lines.unit_price_cents"),
        (_enum_without_default, "forward", "channel"),
    ],
)
def test_each_incompatible_change_is_caught_with_the_field(
    tmp_path: Path, change: object, direction: str, field: str
) -> None:
    problems = find_problems(SchemaStore.load(_evolve(tmp_path, change)))
    found = [p for p in problems if p.direction == direction]
    assert [p.fields for p in found] == [(field,)], problems
    assert f"sluice.orders.OrderPlaced v2 is not {direction} compatible with v1" in str(found[0])
    assert f"at field {field}:" in str(found[0])


def test_compatible_changes_pass(tmp_path: Path) -> None:
    def add_optional(s: dict) -> None:
        s["fields"].append({"name": "note", "type": ["null", "string"], "default": None})

    def add_symbol(s: dict) -> None:  # v1's enum default WEB lets old readers cope
        channel = next(f for f in s["fields"] if f["name"] == "channel")
        channel["type"]["symbols"] = [*channel["type"]["symbols"], "KIOSK"]

    for i, change in enumerate((add_optional, add_symbol)):
        directory = tmp_path / str(i)
        directory.mkdir()
        assert find_problems(SchemaStore.load(_evolve(directory, change))) == []


def test_cli_check_passes_on_the_repo(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["schemas", "check"]) == 0
    assert "OrderPlaced v1 -> v2 (FULL)" in capsys.readouterr().out


def test_cli_check_fails_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _evolve(tmp_path, _new_required_field)
    assert run(["schemas", "check", "--schemas-dir", str(directory)]) == 1
    err = capsys.readouterr().err
    assert "not backward compatible" in err
    assert "coupon" in err
