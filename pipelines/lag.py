"""Consumer-group lag: log-end offset minus committed offset, per group, topic and partition.

The same figure `kafka-consumer-groups --describe` prints. One `list_consumer_group_offsets`
request per group and one `list_offsets` request for all partitions per poll, so the cost
of watching lag does not grow with the number of partitions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin._listoffsets import OffsetSpec

from pipelines.admin import admin_client
from pipelines.errors import BrokerUnavailable
from pipelines.settings import Settings


@dataclass(frozen=True)
class PartitionLag:
    """One row of a lag report."""

    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group has never committed on this partition
    end_offset: int

    @property
    def lag(self) -> int:
        """Records not yet committed; a partition never committed counts from its start."""
        return self.end_offset - (self.committed if self.committed is not None else 0)


def group_lag(
    settings: Settings, group: str, topics: Iterable[str] | None = None, timeout: float = 10.0
) -> list[PartitionLag]:
    """Lag of `group` on `topics` (physical names).

    Without `topics`: the partitions the group has committed on, exactly the rows Kafka's
    `kafka-consumer-groups --describe` prints. With `topics` (backpressure watches a
    group's inputs): every partition, a never-committed one counting all its records.
    """
    client = admin_client(settings)
    try:
        committed = _committed(client, group, timeout)
        wanted = set(committed) if topics is None else _partitions(client, set(topics), timeout)
        partitions = wanted
        ends = _end_offsets(client, partitions, timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot read the lag of group {group}: {exc.args[0]}") from None
    return [
        PartitionLag(group, t, p, committed.get((t, p)), ends[(t, p)])
        for t, p in sorted(partitions)
    ]


def _committed(client: object, group: str, timeout: float) -> dict[tuple[str, int], int]:
    request = [ConsumerGroupTopicPartitions(group)]
    futures = client.list_consumer_group_offsets(request, request_timeout=timeout)  # type: ignore[attr-defined]
    result = futures[group].result(timeout=timeout + 1)
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def _partitions(client: object, topics: set[str], timeout: float) -> set[tuple[str, int]]:
    metadata = client.list_topics(timeout=timeout)  # type: ignore[attr-defined]
    return {
        (name, p)
        for name in topics
        if name in metadata.topics
        for p in metadata.topics[name].partitions
    }


def _end_offsets(
    client: object, partitions: set[tuple[str, int]], timeout: float
) -> dict[tuple[str, int], int]:
    if not partitions:
        return {}
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    request = {TopicPartition(t, p): latest for t, p in partitions}
    futures = client.list_offsets(request, request_timeout=timeout)  # type: ignore[attr-defined]
    return {
        (tp.topic, tp.partition): future.result(timeout=timeout + 1).offset
        for tp, future in futures.items()
    }


def total(rows: Iterable[PartitionLag]) -> int:
    """Summed lag of some rows."""
    return sum(row.lag for row in rows)
