"""The order stage's home-partition test agrees with the Java client's partitioner."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner, murmur2

from pipelines.stages.homing import at_home, home_partition
from pipelines.stages.homing import murmur2 as ours


def test_murmur2_equals_the_java_compatible_one_for_any_bytes() -> None:
    rng = random.Random(4)
    for _ in range(3000):
        data = rng.randbytes(rng.randrange(0, 64))
        assert ours(data) == murmur2(data) & 0xFFFFFFFF


def test_home_partition_is_where_aiokafka_and_faust_put_the_key() -> None:
    partitioner = DefaultPartitioner()
    for n in (1, 3, 6, 7):
        for i in range(500):
            key = f"O-{i:07d}-{i * 7:08d}".encode()
            assert home_partition(key, n) == partitioner(key, list(range(n)), list(range(n)))


def test_at_home_needs_the_order_id_as_key_and_its_partition() -> None:
    oid = b"O-0000001-00000042"
    home = home_partition(oid, 6)
    assert at_home(oid, home, oid, 6)
    assert not at_home(None, home, oid, 6)  # keyless (Kafka Connect, console producer)
    assert not at_home(b"C-000007", home, oid, 6)  # keyed by something else
    assert not at_home(oid, (home + 1) % 6, oid, 6)  # right key, another partitioner
