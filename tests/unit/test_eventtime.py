"""The one event-time range every entry point checks."""

from __future__ import annotations

import datetime as dt

import pytest

from pipelines.eventtime import MAX_EVENT_MS, MIN_EVENT_MS, event_time_problem


@pytest.mark.parametrize("value", [MIN_EVENT_MS, 1, 1_700_000_000_000, MAX_EVENT_MS])
def test_times_in_range_pass(value: int) -> None:
    assert event_time_problem("placed_at", value) is None


@pytest.mark.parametrize("value", [-1, -(2**63), MAX_EVENT_MS + 1, 2**63 - 1])
def test_times_out_of_range_name_field_and_bounds(value: int) -> None:
    problem = event_time_problem("placed_at", value)
    assert problem is not None
    assert problem.startswith("placed_at: ")
    assert str(value) in problem


@pytest.mark.parametrize("value", [1.5, "1", None, True])
def test_non_integers_are_problems(value: object) -> None:
    assert event_time_problem("completed_at", value) is not None


def test_bounds_are_what_datetime_can_show() -> None:
    utc = dt.UTC
    assert dt.datetime.fromtimestamp(MIN_EVENT_MS / 1000, utc).year == 1970
    last = dt.datetime.fromtimestamp(MAX_EVENT_MS / 1000, utc)
    assert (last.year, last.month, last.day) == (9999, 12, 31)
