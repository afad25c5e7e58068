"""Local table state survives only a clean stop (see `faustapp.prepare_state_dir`)."""

from __future__ import annotations

from pathlib import Path

from pipelines.stages.faustapp import CLEAN_MARK, prepare_state_dir


def test_first_start_has_nothing_to_discard(tmp_path: Path) -> None:
    assert not prepare_state_dir(tmp_path / "orders-1")


def test_state_of_a_crashed_run_is_discarded(tmp_path: Path) -> None:
    directory = tmp_path / "orders-1"
    (directory / "tables").mkdir(parents=True)
    (directory / "tables" / "inventory.db").write_text("ahead of the changelog")
    assert prepare_state_dir(directory)
    assert not directory.exists()


def test_state_of_a_clean_stop_is_kept_and_the_mark_consumed(tmp_path: Path) -> None:
    directory = tmp_path / "orders-1"
    (directory / "tables").mkdir(parents=True)
    (directory / CLEAN_MARK).write_text("1\n")
    assert not prepare_state_dir(directory)
    assert (directory / "tables").exists()
    assert not (directory / CLEAN_MARK).exists()  # a crash of this run must not look clean
