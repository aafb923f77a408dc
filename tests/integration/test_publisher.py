"""Records published in batches land where the producer would have put them one by one."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from stream.app.publisher import Batches
from stream.app.topics import ensure_topics
from stream.config import Settings
from tests.integration.conftest import consume_to_end

pytestmark = pytest.mark.integration


async def publish(settings: Settings, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        # one by one into "interventions", in batches into "outcomes": same keys
        for i in range(n):
            await producer.send(
                settings.topic("interventions"), f"v{i}".encode(), key=f"u{i}".encode()
            )
        await producer.flush()
        batches = Batches(producer)
        for i in range(n):
            await batches.add(settings.topic("outcomes"), f"u{i}".encode(), f"v{i}".encode())
        for i in range(5):  # no key: spread in turn; headers kept
            await batches.add(settings.topic("dlq"), None, b"x" * i, headers=[("h", b"%d" % i)])
        big = b"y" * 40_000  # more than a producer batch (16 KiB): split across batches
        for _ in range(3):
            await batches.add(settings.topic("dlq"), b"big", big, partition=1)
        await batches.send()
    finally:
        await producer.stop()


def test_batched_records_go_to_the_partition_of_their_key_in_order(settings: Settings) -> None:
    asyncio.run(ensure_topics(settings))
    asyncio.run(publish(settings, 500))
    one_by_one = asyncio.run(consume_to_end(settings, "interventions"))
    batched = asyncio.run(consume_to_end(settings, "outcomes"))
    assert len(one_by_one) == len(batched) == 500
    where = {r.key: r.partition for r in one_by_one}
    assert {r.key: r.partition for r in batched} == where
    assert len(set(where.values())) == settings.partitions
    for p in range(settings.partitions):  # in the order added, within each partition
        values = [r.value for r in batched if r.partition == p]
        assert values == sorted(values, key=lambda v: int(v[1:]))
    dlq = asyncio.run(consume_to_end(settings, "dlq"))
    keyless = [r for r in dlq if r.key is None]
    assert sorted(r.value for r in keyless) == [b"x" * i for i in range(5)]
    assert all(r.headers == (("h", b"%d" % len(r.value)),) for r in keyless)
    assert len({r.partition for r in keyless}) == 5
    assert [len(r.value) for r in dlq if r.key == b"big" and r.partition == 1] == [40_000] * 3
