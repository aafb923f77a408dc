"""Where a shopper's records go: the producer's default partitioner, cached or not."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from stream.app.publisher import cached_key_partition
from stream.app.topics import key_partition


def test_key_partition_is_the_default_partitioners_choice_every_time_it_is_asked() -> None:
    partitioner = DefaultPartitioner()
    keys = [f"s{i:07d}".encode() for i in range(3_000)] + [b"", b"\xff" * 40]
    for partitions in (1, 2, 8, 12):
        everything = list(range(partitions))
        expected = [partitioner(key, everything, everything) for key in keys]
        assert [key_partition(key, partitions) for key in keys] == expected
        # twice: the second round answers from the publisher's cache
        assert [cached_key_partition(key, partitions) for key in keys] == expected
        assert [cached_key_partition(key, partitions) for key in keys] == expected
    assert len({key_partition(key, 8) for key in keys}) == 8
