"""The producer's choice of partition, without rebuilding its inputs per record.

aiokafka picks a keyed record's partition in Python on every send: it builds a set of
the topic's partitions and turns it into a list, builds a second set of those with a
leader and turns that into a list too, then hashes the key with a pure-Python murmur2
that walks it four bytes at a time, indexing and masking each byte.

* `partition_lists_per_metadata`: the two lists depend only on the cluster metadata,
  which aiokafka replaces wholesale (a new dict per topic) on every refresh, so they are
  built once per topic and metadata generation and reused until the next refresh.
* `murmur2`: the same hash (Kafka's, as the Java client computes it, so records land on
  the partitions every other client picks), reading the key's 32-bit words with one
  `struct` call instead of four indexed bytes per word.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any

SEED = 0x9747B28C
M = 0x5BD1E995
MASK = 0xFFFFFFFF


@lru_cache(maxsize=256)
def _words(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}I")


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of `data` (equal to aiokafka's `murmur2`, tested on every length)."""
    length = len(data)
    h = (SEED ^ length) & MASK
    count = length >> 2
    if count:
        for word in _words(count).unpack_from(data):
            k = (word * M) & MASK
            k ^= k >> 24
            h = ((h * M) & MASK) ^ ((k * M) & MASK)
    tail = length & 3
    if tail:
        at = length - tail
        if tail == 3:
            h ^= data[at + 2] << 16
        if tail >= 2:
            h ^= data[at + 1] << 8
        h = ((h ^ data[at]) * M) & MASK
    h ^= h >> 13
    h = (h * M) & MASK
    return h ^ (h >> 15)


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
