"""The producer's choice of partition, without rebuilding its inputs per record.

aiokafka picks a keyed record's partition in Python on every send: it builds a set of
the topic's partitions and turns it into a list, builds a second set of those with a
leader and turns that into a list too, then hashes the key with a pure-Python murmur2
that walks it four bytes at a time, indexing and masking each byte.

* `partition_lists_per_metadata`: the two lists depend only on the cluster metadata,
  which aiokafka replaces wholesale (a new dict per topic) on every refresh, so they are
  built once per topic and metadata generation and reused until the next refresh.
* `murmur2`: the same hash (Kafka's, as the Java client computes it, so records land on
  the partitions every other client picks) that `pipelines.stages.homing` computes for
  placements, which reads the key's 32-bit words with `struct` instead of four indexed
  bytes per word.
"""

from __future__ import annotations

from typing import Any

from pipelines.stages.homing import murmur2

__all__ = ["murmur2", "partition_lists_per_metadata"]


def partition_lists_per_metadata(base: Any) -> tuple[Any]:
    """`AIOKafkaProducer._partition` with the partition lists kept per metadata refresh."""

    def _partition(  # noqa: PLR0917 - aiokafka's signature, called positionally
        self: Any,
        topic: str,
        partition: int | None,
        key: Any,
        value: Any,
        serialized_key: Any,
        serialized_value: Any,
    ) -> int:
        metadata = self._metadata
        current = metadata._partitions.get(topic)
        if partition is not None or current is None:
            return int(base(self, topic, partition, key, value, serialized_key, serialized_value))
        lists: dict[str, tuple[Any, list[int], list[int]]] = self.__dict__.setdefault(
            "_sluice_partition_lists", {}
        )
        seen = lists.get(topic)
        if seen is None or seen[0] is not current:
            seen = lists[topic] = (
                current,
                list(metadata.partitions_for_topic(topic)),
                list(metadata.available_partitions_for_topic(topic)),
            )
        return int(self._partitioner(serialized_key, seen[1], seen[2]))

    return (_partition,)
