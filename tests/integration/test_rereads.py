"""A consumer that starts past records its partition's state never took in reads them.

The journeys' checkpoint keeps the next offset of each input topic
(``stream/domain/progress.py``). Here the group's committed offset is moved past
records no worker has processed (what a commit of records dropped around a
rebalance does); the next worker finds the gap, reads again from the offset the
state expects (``stream/app/rereads.py``) and takes in every record once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from stream.broker import EmbeddedBroker
from stream.config import Settings
from stream.domain.timeutil import HOUR, SECOND
from tests.helpers import EventMaker, wait_until
from tests.integration.conftest import Worker, isolated_settings, produce
from tests.integration.test_faults_rules import ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def carts(ev: EventMaker, first: int, n: int) -> list[tuple[str, bytes | None, bytes, int | None]]:
    start = int(time.time() * 1000) - HOUR
    return [
        ("cart", f"u{i}".encode(), orjson.dumps(ev.add(f"u{i}", start + i * SECOND)), 0)
        for i in range(first, first + n)
    ]


class FaustNamed(RoundRobinPartitionAssignor):
    """Round robin under the name of faust's assignor: the group's protocol."""

    name = "faust"


def commit(settings: Settings, kind: str, offset: int) -> None:
    """Commit ``offset`` for partition 0 of a topic as a member of the workers' group
    (joined while no worker runs, so it is assigned every partition)."""

    async def run() -> None:
        consumer = AIOKafkaConsumer(
            settings.topic(kind),
            **settings.kafka_client_options(),
            group_id=settings.app_id,
            enable_auto_commit=False,
            partition_assignment_strategy=(FaustNamed,),
        )
        await consumer.start()
        try:
            tp = TopicPartition(settings.topic(kind), 0)
            while tp not in consumer.assignment():
                await consumer.getmany(timeout_ms=200)
            await consumer.commit({tp: offset})
            assert await consumer.committed(tp) == offset
        finally:
            await consumer.stop()

    asyncio.run(run())


def consumed(worker: Worker) -> float:
    return worker.metric("goldenflow_events_consumed_total")


def test_records_behind_a_committed_offset_are_read_again(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker, partitions=1, data_dir=tmp_path / "data")
    ev = EventMaker()
    first = Worker(settings, tmp_path / "first.log").start()
    try:
        wait_until(lambda: ready(first), 90, "the first worker ready")
        asyncio.run(produce(settings, carts(ev, 0, 10)))
        wait_until(lambda: consumed(first) == 10, 60, "ten events taken in")
    finally:
        first.stop()
    asyncio.run(produce(settings, carts(ev, 10, 10)))  # offsets 10-19, read by no one
    commit(settings, "cart", 15)  # as if 10-14 had been processed

    second = Worker(settings, tmp_path / "second.log").start()
    try:
        wait_until(lambda: consumed(second) >= 10, 90, "offsets 10-19 taken in")
        time.sleep(2)  # nothing more arrives
        assert consumed(second) == 10
        assert second.metric("goldenflow_rereads_total") >= 1
        assert second.metric("goldenflow_offset_gaps_skipped_total") == 0
        log = second.log.read_text()
        assert "records from offset 10 never reached the partition's state" in log
    finally:
        second.stop()
