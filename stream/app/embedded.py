"""What the embedded broker (Tansu) needs that Apache Kafka does not.

Tansu answers ListOffsets(LATEST) with the first offset of a partition's last
produce batch + 1, not the real end offset, while the high water that comes back
with fetched records is right. Faust's table recovery asks the consumer for the
changelogs' end offsets (``Consumer.highwaters``) and stops reading there, so with
batched produces it would restore old or no state and still log "Recovery
complete". In the ``embedded`` profile only, the worker's consumer answers that
question from fetch responses instead, and produce batching stays on.

Tansu also holds a fetch request for the whole fetch wait when it has no records
for it yet, even if records arrive meanwhile (Apache Kafka answers as soon as they
do); ``GOLDENFLOW_FETCH_WAIT_MS`` shortens the wait (``stream/app/fetch_wait.py``),
which is not done by default.

This replaces one method on one consumer instance; it is pinned to the faust
version below and a test fails if faust's recovery stops calling it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from stream.config import Settings

log = logging.getLogger("goldenflow.embedded")

#: The faust-streaming version whose recovery this was checked against.
FAUST_VERSION = "0.15.3"


async def fetch_highwaters(settings: Settings, tps: list[Any], timeout: float = 10.0) -> dict:
    """End offsets of ``tps`` read from fetch responses' high water marks."""
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_options(),
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=1024,
        fetch_max_wait_ms=50,
    )
    try:
        await consumer.start()
        wanted = {TopicPartition(tp.topic, tp.partition): tp for tp in tps}
        consumer.assign(list(wanted))
        for tp in wanted:
            consumer.seek(tp, 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        missing = set(wanted)
        while missing and loop.time() < deadline:
            await consumer.getmany(*missing, timeout_ms=100, max_records=1)
            missing = {tp for tp in missing if consumer.highwater(tp) is None}
        if missing:
            raise TimeoutError(f"no fetch response gave the high water of {sorted(missing)}")
        return {wanted[tp]: consumer.highwater(tp) for tp in wanted}
    finally:
        await consumer.stop()


def use_fetch_highwaters(app: Any, settings: Settings) -> None:
    """Make faust's recovery take changelog end offsets from fetch responses."""

    async def highwaters(*partitions: Any) -> dict:
        result = await fetch_highwaters(settings, list(partitions))
        log.info("end offsets from fetch high water: %d partitions", len(result))
        return result

    app.consumer.highwaters = highwaters
