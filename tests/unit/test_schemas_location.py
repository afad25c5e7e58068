"""Where a process finds `schemas/`: the override, the installed package, the checkout;
never the working directory. The wheel carries them (`pip install` of the built wheel,
then `sluice schemas check` from another directory, works)."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from pipelines import schemas

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_the_schemas_where_the_package_looks() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    included = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    packaged = schemas.PACKAGED.relative_to(ROOT)
    assert included == {"schemas": str(packaged)}


def test_a_checkout_reads_its_own_schemas_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLUICE_SCHEMAS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert schemas.schemas_dir() == ROOT / "schemas"


def test_installed_schemas_come_before_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packaged = tmp_path / "pipelines" / "_schemas"
    shutil.copytree(ROOT / "schemas", packaged)
    monkeypatch.delenv("SLUICE_SCHEMAS_DIR", raising=False)
    monkeypatch.setattr(schemas, "PACKAGED", packaged)
    assert schemas.schemas_dir() == packaged
    assert schemas.SchemaStore.load(packaged).names() == schemas.default_store().names()


def test_the_environment_overrides_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_SCHEMAS_DIR", str(tmp_path))
    assert schemas.schemas_dir() == tmp_path
