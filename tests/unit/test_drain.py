"""The batch drain: batches acknowledged only once their handler has run to the end, and
one fetch taken the way faust's own drain loop takes it."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from faust.sensors.monitor import Monitor
from faust.types import TP
from faust.types.tuples import ConsumerMessage, Message

from stream.app.drain import BatchDrain, finish_even_if_cancelled


class Handler:
    """A batch handler that records its progress and can be held mid-batch."""

    def __init__(self, fail: bool = False) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished: list[list[Any]] = []
        self.fail = fail

    async def __call__(self, batch: list[Any]) -> None:
        self.started.set()
        await self.release.wait()
        if self.fail:
            raise RuntimeError("the handler failed")
        self.finished.append(batch)


def test_a_batch_is_acknowledged_after_its_handler_returns() -> None:
    acked: list[Sequence[Any]] = []

    async def scenario() -> None:
        handler = Handler()
        handler.release.set()
        await finish_even_if_cancelled(handler([1, 2, 3]), lambda: acked.append([1, 2, 3]))
        assert handler.finished == [[1, 2, 3]]

    asyncio.run(scenario())
    assert acked == [[1, 2, 3]]


def test_a_failed_batch_is_never_acknowledged() -> None:
    acked: list[Sequence[Any]] = []

    async def scenario() -> None:
        handler = Handler(fail=True)
        handler.release.set()
        with pytest.raises(RuntimeError, match="the handler failed"):
            await finish_even_if_cancelled(handler([1, 2]), lambda: acked.append([1, 2]))

    asyncio.run(scenario())
    assert acked == []


def test_a_cancelled_drain_finishes_the_batch_then_acknowledges_it() -> None:
    """faust stops its fetcher (and so cancels the drain) when the worker stops: the
    batch in hand still runs to its end and is acknowledged before the cancellation
    goes on."""
    acked: list[Sequence[Any]] = []
    handler = Handler()

    async def scenario() -> None:
        drain = asyncio.ensure_future(
            finish_even_if_cancelled(handler(["a", "b"]), lambda: acked.append(["a", "b"]))
        )
        await handler.started.wait()
        drain.cancel()
        await asyncio.sleep(0.01)
        assert not drain.done()  # still waiting for the batch
        assert acked == []
        handler.release.set()
        with pytest.raises(asyncio.CancelledError):
            await drain

    asyncio.run(scenario())
    assert handler.finished == [["a", "b"]]
    assert acked == [["a", "b"]]


def test_a_cancelled_drain_whose_batch_then_fails_acknowledges_nothing() -> None:
    acked: list[Sequence[Any]] = []
    handler = Handler(fail=True)

    async def scenario() -> None:
        drain = asyncio.ensure_future(
            finish_even_if_cancelled(handler(["a"]), lambda: acked.append(["a"]))
        )
        await handler.started.wait()
        drain.cancel()
        await asyncio.sleep(0.01)
        handler.release.set()
        with pytest.raises(RuntimeError, match="the handler failed"):
            await drain

    asyncio.run(scenario())
    assert acked == []


# -- the loop over one fetch ---------------------------------------------------------
#
# faust's consumer surface the drain uses (pinned by tests/unit/test_faust_pins.py),
# stood in for by a small object: one fetch in, what reached the handler, faust's
# callback, the acks, offsets, gaps and commits out.


class FetchConsumer:
    def __init__(self, fetch: list[tuple[TP, Message]], commit_every: int | None = None) -> None:
        self.fetch = fetch
        self._read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._unacked_messages: set[Message] = set()
        self._commit_every = commit_every
        self._n_acked = 0
        self.should_stop = False
        self.suspend_flow = asyncio.Event()
        self.delivered: list[Message] = []  # to faust's callback
        self.acked: list[Message] = []
        self.gaps: list[tuple[TP, int, int]] = []
        self.commits = 0

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        for item in self.fetch:
            yield item

    async def callback(self, message: Message) -> None:
        self.delivered.append(message)

    async def wait_first(self, *coros: Any) -> None:
        await coros[0]
        for coro in coros[1:]:
            coro.close()

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        self.gaps.append((tp, offset_from, offset_to))

    def ack(self, message: Message) -> bool:
        message.acked = True
        self._unacked_messages.discard(message)
        self.acked.append(message)
        self._n_acked += 1
        return True

    async def commit(self) -> bool:
        self.commits += 1
        return True


class FetchApp:
    def __init__(self, consumer: FetchConsumer) -> None:
        self.consumer = consumer
        self.topics = SimpleNamespace(acks_enabled_for=lambda topic: True)
        self.monitor = Monitor()  # faust's own, told per batch (stream/app/batch_sensors.py)
        self.sensors = [self.monitor]
        self.should_stop = False


def record(topic: str, partition: int, offset: int) -> tuple[TP, Message]:
    msg = ConsumerMessage(topic, partition, offset, 0.0, 0, None, b"k", b"{}", None)
    return TP(topic, partition), msg


def test_one_fetch_reaches_the_handler_in_batches_and_is_acknowledged_after() -> None:
    cart = [record("cart", 0, offset) for offset in range(5)]
    changelog = record("journeys-changelog", 0, 7)
    fetch = [cart[0], cart[1], changelog, cart[2], cart[3], cart[4]]
    consumer = FetchConsumer(fetch, commit_every=5)
    app = FetchApp(consumer)
    handled: list[list[int]] = []

    async def handle(batch: list[Any]) -> None:
        assert not any(m.acked for m in batch)  # acknowledged only after the handler
        assert set(batch) <= consumer._unacked_messages  # a rebalance waits for them
        handled.append([m.offset for m in batch])
        if batch[0].offset == 3:
            batch[0].acked = True  # set aside (stream/app/stale_events.py)

    asyncio.run(BatchDrain(app, {"cart"}, handle, batch_max=3).drain_once())
    assert handled == [[0, 1, 2], [3, 4]]
    assert consumer.delivered == [changelog[1]]  # the changelog went to faust as before
    assert [m.offset for m in consumer.acked] == [0, 1, 2, 4]  # never the set-aside one
    assert consumer._read_offset[TP("cart", 0)] == 4
    assert consumer._read_offset[TP("journeys-changelog", 0)] == 7
    assert consumer.commits == 0  # 4 acked, commit_every 5
    assert TP("cart", 0) in app.monitor.stream_inbound_time
    assert app.monitor.messages_received_total == 5
    assert app.monitor.messages_active == 1  # the set-aside one is never reported out
    assert app.monitor.tp_read_offsets[TP("cart", 0)] == 4


def test_records_read_already_are_dropped_and_offset_jumps_registered_as_gaps() -> None:
    tp = TP("cart", 1)
    consumer = FetchConsumer([record("cart", 1, 3), record("cart", 1, 9), record("cart", 1, 10)])
    consumer._read_offset[tp] = 5  # faust read up to 5 before: 3 is old, 9 skips 6-8
    handled: list[int] = []

    async def handle(batch: list[Any]) -> None:
        handled.extend(m.offset for m in batch)

    asyncio.run(BatchDrain(FetchApp(consumer), {"cart"}, handle, batch_max=100).drain_once())
    assert handled == [9, 10]
    assert consumer.gaps == [(tp, 6, 9)]
    assert consumer._read_offset[tp] == 10


def test_a_full_commit_interval_commits_after_the_batch() -> None:
    consumer = FetchConsumer([record("cart", 0, offset) for offset in range(4)], commit_every=4)

    async def handle(batch: list[Any]) -> None:
        return None

    asyncio.run(BatchDrain(FetchApp(consumer), {"cart"}, handle, batch_max=2).drain_once())
    assert consumer.commits == 1
    assert consumer._n_acked == 0
