"""`make test-fast` leaves out the slow, three-broker and fault-injection tests; `make
test`, which CI runs, must leave out nothing, or a marker would hide a failure there."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INNER_LOOP_SKIPS = {"slow", "cluster", "chaos"}


def _recipe(target: str) -> str:
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.MULTILINE)
    assert match, target
    return match.group(1)


def test_make_test_selects_every_test() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    addopts = options["ini_options"]["addopts"]
    assert not re.search(r"(^|\s)(-m|-k)\b", addopts)
    assert "pytest" in _recipe("test")
    assert not re.search(r"\s(-m|-k)\b", _recipe("test"))


def test_make_test_fast_leaves_out_exactly_the_inner_loop_markers() -> None:
    expression = re.search(r'-m "([^"]+)"', _recipe("test-fast"))
    assert expression
    assert set(re.findall(r"not (\w+)", expression.group(1))) == INNER_LOOP_SKIPS
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    names = {m.split(":")[0] for m in declared["ini_options"]["markers"]}
    assert names >= INNER_LOOP_SKIPS
