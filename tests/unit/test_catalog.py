from __future__ import annotations

import pytest

from pipelines import catalog
from pipelines.errors import TopicError


def test_names_are_unique_and_dotted() -> None:
    names = [s.name for s in catalog.CATALOG]
    assert len(names) == len(set(names))
    assert all("." in n and n == n.lower() for n in names)


def test_topics_feeding_one_table_are_copartitioned() -> None:
    """Orders-side topics keyed by order id must share one partition count (Faust checks it)."""
    keyed_by_order = [s for s in catalog.CATALOG if s.key == "order_id"]
    assert len(keyed_by_order) >= 4
    assert {s.partition_count(6) for s in keyed_by_order} == {6}


def test_compacted_topics_are_the_latest_value_topics() -> None:
    compacted = {s.name for s in catalog.CATALOG if "compact" in s.cleanup_policy}
    assert compacted == {"orders.status", "analytics.windows"}


@pytest.mark.parametrize(("brokers", "rf", "isr"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)])
def test_replication_adapts_to_cluster_size(brokers: int, rf: int, isr: int) -> None:
    assert catalog.replication_for(brokers) == rf
    assert catalog.min_insync_replicas(rf) == isr


def test_topic_config_carries_retention_and_isr() -> None:
    conf = catalog.get("analytics.windows").config(replication=3)
    assert conf["cleanup.policy"] == "compact"
    assert conf["min.insync.replicas"] == "2"


def test_unknown_topic_names_the_known_ones() -> None:
    with pytest.raises(TopicError, match=r"unknown topic 'orders\.nope'.*orders\.placed"):
        catalog.get("orders.nope")
