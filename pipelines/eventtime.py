"""The event times Sluice accepts: one range, checked the same way everywhere.

An event time (`placed_at`, `confirmed_at`, `rejected_at`, `completed_at`) is epoch
milliseconds in an Avro `long`, so a writer may put anything from -2**63 to 2**63-1 in it.
Window arithmetic near either end overflows a `long` (a window's start is the event time
rounded down, its end the start plus the size), which once crashed the analytics merge
agent on every start. So every entry point refuses what falls outside this range: the
intake with a 422, the stages by dead-lettering the record with the reason, replay by
counting and skipping it like the live stage does.

The range is fixed, not relative to the clock, so the live stage and a replay months
later agree on every record: from the Unix epoch up to the last millisecond of year 9999,
the range every ISO 8601 tool (and Python's `datetime`) can show.
"""

from __future__ import annotations

from typing import Any

#: The earliest event time accepted: 1970-01-01T00:00:00.000Z.
MIN_EVENT_MS = 0
#: The latest event time accepted: 9999-12-31T23:59:59.999Z.
MAX_EVENT_MS = 253_402_300_799_999


def event_time_problem(field: str, value: Any) -> str | None:
    """Why `value` is not a usable event time for `field`, or None when it is."""
    if type(value) is not int:
        return f"{field}: an event time must be an integer of epoch milliseconds"
    if MIN_EVENT_MS <= value <= MAX_EVENT_MS:
        return None
    return (
        f"{field}: event time {value} is outside the accepted range "
        f"{MIN_EVENT_MS}..{MAX_EVENT_MS} (1970-01-01 to 9999-12-31 in epoch milliseconds)"
    )
