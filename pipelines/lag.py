"""Consumer-group lag: log-end offset minus committed offset, per group, topic and partition.

The same figure `kafka-consumer-groups --describe` prints. Per poll: one OffsetFetch for
all partitions of the group and one `list_offsets` request for their ends, so the cost of
watching lag does not grow with the number of partitions.

Committed offsets are read through a consumer that carries the group's id but never
subscribes (so it never joins the group or commits for it), not through the admin API:
librdkafka's admin ListConsumerGroupOffsets dereferences a missing group handle when the
broker answers NOT_COORDINATOR (a fresh cluster, a broker restart, a coordinator move) and
the whole process dies with SIGSEGV (confluent-kafka-python issue 1982, librdkafka issue
5040). A consumer's own group handle retries that answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

from confluent_kafka import Consumer, KafkaException, TopicPartition
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


class LagReader:
    """Reads one group's lag; keep it open to poll (one client, not one per poll)."""

    def __init__(self, settings: Settings, group: str, timeout: float = 10.0) -> None:
        self.settings, self.group, self.timeout = settings, group, timeout
        self._admin = admin_client(settings)
        self._consumer = Consumer(
            settings.confluent(
                **{
                    "group.id": group,
                    "client.id": f"sluice-lag-{uuid.uuid4().hex[:6]}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                }
            )
        )

    def rows(self, topics: Iterable[str] | None = None) -> list[PartitionLag]:
        """Lag on `topics` (physical names), or on every partition the group committed on.

        Without `topics`: exactly the rows Kafka's `kafka-consumer-groups --describe`
        prints. With `topics` (backpressure watches a group's inputs): every partition, a
        never-committed one counting all its records.
        """
        try:
            wanted = _partitions(self._admin, None if topics is None else set(topics), self.timeout)
            committed = self._committed(wanted)
            if topics is None:
                wanted = set(committed)
            ends = _end_offsets(self._admin, wanted, self.timeout)
        except KafkaException as exc:
            reason = exc.args[0]
            raise BrokerUnavailable(
                f"cannot read the lag of group {self.group}: {reason}"
            ) from None
        return [
            PartitionLag(self.group, t, p, committed.get((t, p)), ends[(t, p)])
            for t, p in sorted(wanted)
        ]

    def _committed(self, partitions: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        request = [TopicPartition(t, p) for t, p in sorted(partitions)]
        out: dict[tuple[str, int], int] = {}
        for tp in self._consumer.committed(request, timeout=self.timeout):
            if tp.error is not None:
                raise KafkaException(tp.error)
            if tp.offset >= 0:
                out[(tp.topic, tp.partition)] = tp.offset
        return out

    def close(self) -> None:
        """Close the consumer (it never joined the group: this leaves nothing behind)."""
        self._consumer.close()

    def __enter__(self) -> LagReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def group_lag(
    settings: Settings, group: str, topics: Iterable[str] | None = None, timeout: float = 10.0
) -> list[PartitionLag]:
    """Lag of `group` on `topics` once (see `LagReader.rows`)."""
    with LagReader(settings, group, timeout) as reader:
        return reader.rows(topics)


def _partitions(client: object, topics: set[str] | None, timeout: float) -> set[tuple[str, int]]:
    """Partitions of `topics`, or of every non-internal topic when None."""
    metadata = client.list_topics(timeout=timeout)  # type: ignore[attr-defined]
    names = topics if topics is not None else {n for n in metadata.topics if not n.startswith("__")}
    return {
        (name, p)
        for name in names
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
