"""Seeking back to a gap: once per gap, again from the timer, then skipping a real one."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from stream.app.metrics import Metrics
from stream.app.rereads import REREAD_TRIES, REREAD_WAIT_MS, Rereads
from stream.domain.engine import CoreConfig, PartitionCore, Record
from stream.domain.timeutil import MINUTE
from tests.helpers import T0, EventMaker, core


class Consumer:
    """Stands in for faust's consumer: records the seeks asked of it."""

    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    async def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp.topic, tp.partition, offset))


def setup() -> tuple[Rereads, Consumer, PartitionCore, CollectorRegistry, list[Record]]:
    consumer = Consumer()
    registry = CollectorRegistry()
    rereads = Rereads(SimpleNamespace(consumer=consumer), Metrics(registry))
    base = core(CoreConfig(lateness_ms=MINUTE, track_offsets=True))
    c = PartitionCore(0, base.timing, base.decider, base.config)
    ev = EventMaker()
    log = [
        Record("cart", orjson.dumps(ev.add(f"u{i}", T0 + i * MINUTE)), b"k", "t.cart", 0, i)
        for i in range(10)
    ]
    return rereads, consumer, c, registry, log


def batch(rereads: Rereads, c: PartitionCore, records: list[Record], now: int) -> None:
    out = c.step(records, now_ms=None)
    asyncio.run(rereads.after_batch(out.held, {0: c}, now))


def test_a_gap_is_sought_once_then_again_from_the_timer_until_filled() -> None:
    rereads, consumer, c, registry, log = setup()
    batch(rereads, c, log[:2], 0)
    batch(rereads, c, log[5:7], 100)  # 2-4 missing
    assert consumer.seeks == [("t.cart", 0, 2)]
    batch(rereads, c, log[7:8], 200)  # fetched before the seek: held, no new seek
    assert consumer.seeks == [("t.cart", 0, 2)]
    asyncio.run(rereads.retry({0: c}, 100 + REREAD_WAIT_MS - 1))
    assert len(consumer.seeks) == 1
    asyncio.run(rereads.retry({0: c}, 100 + REREAD_WAIT_MS))  # the seek did not take
    assert consumer.seeks[-1] == ("t.cart", 0, 2)
    assert rereads.pending_on(0)
    batch(rereads, c, log[2:], 6_000)  # read again from 2
    assert not rereads.pending_on(0)
    assert registry.get_sample_value("goldenflow_rereads_total") == 2
    assert c.progress.snapshot() == {"t.cart": 10}


def test_a_gap_still_there_after_the_tries_is_skipped_to_the_first_record_past_it() -> None:
    rereads, consumer, c, registry, log = setup()
    batch(rereads, c, log[:2], 0)
    now = 0
    for _ in range(REREAD_TRIES):  # offsets 2-3 hold nothing: 4 comes each time
        batch(rereads, c, log[4:6], now)
        now += REREAD_WAIT_MS
        asyncio.run(rereads.retry({0: c}, now))
    assert consumer.seeks[:REREAD_TRIES] == [("t.cart", 0, 2)] * REREAD_TRIES
    assert consumer.seeks[-1] == ("t.cart", 0, 4)
    assert registry.get_sample_value("goldenflow_offset_gaps_skipped_total") == 1
    out = c.step(log[4:], now_ms=None)
    assert out.held == [] and out.events_by_type == {"cart_add": 6}


def test_a_revoked_partition_forgets_its_gaps() -> None:
    rereads, _, c, _, log = setup()
    batch(rereads, c, log[:1], 0)
    batch(rereads, c, log[3:4], 0)
    assert rereads.pending_on(0)
    rereads.forget({0})
    assert not rereads.pending_on(0)


def test_a_gap_filled_later_in_the_same_batch_is_not_sought() -> None:
    rereads, consumer, c, _, log = setup()
    batch(rereads, c, log[:1], 0)
    batch(rereads, c, [log[3], log[4], *log[1:]], 0)  # fetched before a seek, then again
    assert consumer.seeks == []
    assert not rereads.pending_on(0)
