"""The raw limit: an aiokafka pass-through with no logic.

Consume the input topics from the start, decode each event with orjson, encode it
again and produce it to an output topic. ``send``: one ``send`` per message, its
delivery not awaited per message (the producer batches); ``send_batch``: the
messages of each fetched partition appended to producer batches sent with
``send_batch``. The time runs from the first event fetched to the last one's
delivery confirmed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from stream.bench.common import Throughput
from stream.config import Settings

#: producer linger for every client the bench runs (faust's worker uses 5 ms)
LINGER_MS = 20


async def passthrough(
    settings: Settings, out_topic: str, expect: int, mode: str, idle_timeout: float = 30.0
) -> Throughput:
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_options(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=1024 * 1024,
    )
    producer = AIOKafkaProducer(**settings.kafka_client_options(), linger_ms=LINGER_MS)
    await consumer.start()
    await producer.start()
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in settings.input_topics
            for p in range(settings.partitions)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        first = 0.0
        pending: list[Any] = []
        idle_since = time.monotonic()
        while seen < expect:
            fetched = await consumer.getmany(timeout_ms=200, max_records=10_000)
            if not fetched:
                if time.monotonic() - idle_since > idle_timeout:
                    raise TimeoutError(f"pass-through saw {seen} of {expect} events")
                continue
            idle_since = time.monotonic()
            if not first:
                first = time.time()
            for tp, records in fetched.items():
                seen += len(records)
                if mode == "send":
                    for rec in records:
                        value = orjson.dumps(orjson.loads(rec.value))
                        pending.append(await producer.send(out_topic, value, key=rec.key))
                else:
                    pending.extend(await _send_batches(producer, out_topic, tp.partition, records))
            if len(pending) > 50_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return Throughput(seen, first, time.time())
    finally:
        await consumer.stop()
        await producer.stop()


async def _send_batches(
    producer: AIOKafkaProducer, topic: str, partition: int, records: list[Any]
) -> list[Any]:
    futures = []
    batch = producer.create_batch()
    for rec in records:
        value = orjson.dumps(orjson.loads(rec.value))
        if batch.append(key=rec.key, value=value, timestamp=None) is None:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=rec.key, value=value, timestamp=None)
    futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures
