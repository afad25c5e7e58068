"""`sluice lag`'s rows and group lookup, without a broker (the broker test compares with
Kafka's own tool: tests/integration/test_backpressure.py)."""

from __future__ import annotations

import importlib

import pytest

from pipelines.lag import GroupReport, Member, PartitionLag
from pipelines.settings import Settings

LAG_CLI = importlib.import_module("pipelines.cli.lag")
MEMBER = Member("rdkafka-1", "/127.0.0.1", "rdkafka")


def test_a_partition_never_committed_has_no_reported_lag_but_counts_its_backlog() -> None:
    unread = PartitionLag("g", "t", 0, None, end_offset=50, log_start=20, member=MEMBER)
    read = PartitionLag("g", "t", 1, 40, end_offset=50)
    assert (unread.reported_lag, unread.lag) == (None, 30)  # Kafka prints "-"; 30 retained
    assert (read.reported_lag, read.lag) == (10, 10)


def test_a_group_exists_with_members_or_offsets() -> None:
    committed = PartitionLag("g", "t", 0, 3, end_offset=5)
    assert not GroupReport("g", "dead").exists
    assert GroupReport("g", "dead", [committed]).exists  # members gone, offsets kept
    assert GroupReport("g", "empty").exists
    assert GroupReport("g", "stable").exists


def test_the_total_line_says_what_is_not_committed_yet() -> None:
    rows = [
        PartitionLag("g", "t", 0, 40, end_offset=50, member=MEMBER),
        PartitionLag("g", "t", 1, None, end_offset=8, log_start=2, member=MEMBER),
    ]
    line = LAG_CLI._total_line(GroupReport("g", "stable", rows))
    assert line == (
        "total lag of g (stable): 10; 1 assigned partition(s) not committed yet, "
        "6 record(s) retained in them"
    )


@pytest.mark.parametrize(
    ("prefix", "name", "existing", "found"),
    [
        ("demo-1.", "sluice-orders", {"demo-1.sluice-orders"}, "demo-1.sluice-orders"),
        ("demo-1.", "demo-1.sluice-orders", {"demo-1.sluice-orders"}, "demo-1.sluice-orders"),
        ("demo-1.", "outside", {"outside"}, "outside"),  # not a pipeline group: as given
        ("demo-1.", "both", {"demo-1.both", "both"}, "demo-1.both"),  # the prefix wins
        ("", "sluice-orders", {"sluice-orders"}, "sluice-orders"),
        ("demo-1.", "nowhere", set(), "demo-1.nowhere"),  # reported missing under the prefix
    ],
)
def test_group_names_resolve_like_consume_resolves_topics(
    monkeypatch: pytest.MonkeyPatch, prefix: str, name: str, existing: set[str], found: str
) -> None:
    asked: list[str] = []

    def report(_settings: Settings, group: str, timeout: float) -> GroupReport:
        asked.append(group)
        return GroupReport(group, "stable" if group in existing else "dead")

    monkeypatch.setattr(LAG_CLI.lag_mod, "group_report", report)
    settings = Settings(topic_prefix=prefix)
    assert LAG_CLI.resolve(settings, name).group == found
    assert asked[0] == (prefix + name if not name.startswith(prefix) else name)
