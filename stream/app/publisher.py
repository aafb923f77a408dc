"""A batch's records, handed to the producer as one record batch per topic partition.

A checkpoint writes one changelog record per journey a batch touched, and the
publish that follows writes its commands, outcomes and dead letters: several
records per input event. Sent one by one (``producer.send``: a coroutine, a
metadata check and an append to the accumulator each, plus faust's per-message
sensor calls) they cost more than the rest of the publish together. Here the
records are appended to aiokafka's ``BatchBuilder`` per topic partition and each
batch is submitted with ``send_batch``, the producer's public batch API.

Records with a key and no partition go where the producer's default partitioner
sends them (murmur2 of the key over the topic's partitions), so consumers keyed
by shopper see them exactly as before; records with neither (a dead letter whose
message had no key) are spread over the partitions in turn.

The producer is faust's own aiokafka producer (:func:`producer_of`, checked against
the pinned faust version by ``tests/unit/test_faust_pins.py``): one connection, one
accumulator, and faust's flush before a commit covers these batches too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from stream.app.topics import key_partition

Headers = Sequence[tuple[str, bytes]]

#: key_partition for the shoppers of the last few batches: a batch publishes several
#: records per shopper (decisions, outcomes, commands), and aiokafka's murmur2 is
#: Python (~1.8 µs a key, against ~0.1 µs for a cache hit).
cached_key_partition = lru_cache(maxsize=4_096)(key_partition)


def producer_of(app: Any) -> Any:
    """The aiokafka producer behind faust's ``app.producer`` (started with the app)."""
    return app.producer._ensure_producer()


class Batches:
    """Records gathered per (topic, partition); :meth:`send` submits them."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer  # an AIOKafkaProducer
        self._open: dict[tuple[str, int], Any] = {}
        self._partitions: dict[str, list[int]] = {}
        self._futures: list[asyncio.Future[Any]] = []
        self.records = 0

    async def partition_for(self, topic: str, key: bytes | None) -> int:
        """The partition the default partitioner gives ``key`` (murmur2, as aiokafka and
        the Java client do); without a key, the next partition in turn."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await self.producer.partitions_for(topic))
        if key is None:
            return partitions[self.records % len(partitions)]
        return partitions[cached_key_partition(key, len(partitions))]

    async def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        if partition is None:
            partition = await self.partition_for(topic, key)
        slot = (topic, partition)
        batch = self._open.get(slot)
        if batch is None:
            batch = self._open[slot] = self.producer.create_batch()
        extra = list(headers) if headers else []
        if batch.append(timestamp=None, key=key, value=value, headers=extra) is None:
            # full: submit it and start the next one (a single record always fits an
            # empty batch up to the producer's max_request_size)
            self._futures.append(await self.producer.send_batch(batch, topic, partition=partition))
            batch = self._open[slot] = self.producer.create_batch()
            if batch.append(timestamp=None, key=key, value=value, headers=extra) is None:
                raise ValueError(
                    f"a record of {len(value or b'')} bytes for {topic} does not fit an empty "
                    "batch: raise the producer's max_request_size"
                )
        self.records += 1

    async def send(self) -> None:
        """Submit every open batch and wait until the brokers have acknowledged all."""
        for (topic, partition), batch in self._open.items():
            self._futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        self._open.clear()
        futures, self._futures = self._futures, []
        if futures:
            await asyncio.gather(*futures)
        self.records = 0
