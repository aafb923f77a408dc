"""The batch drain acknowledges a batch only once its handler has run to the end."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from stream.app.drain import run_then_ack


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
        await run_then_ack(handler, [1, 2, 3], acked.append)
        assert handler.finished == [[1, 2, 3]]

    asyncio.run(scenario())
    assert acked == [[1, 2, 3]]


def test_a_failed_batch_is_never_acknowledged() -> None:
    acked: list[Sequence[Any]] = []

    async def scenario() -> None:
        handler = Handler(fail=True)
        handler.release.set()
        with pytest.raises(RuntimeError, match="the handler failed"):
            await run_then_ack(handler, [1, 2], acked.append)

    asyncio.run(scenario())
    assert acked == []


def test_a_cancelled_drain_finishes_the_batch_then_acknowledges_it() -> None:
    """faust stops its fetcher (and so cancels the drain) in a rebalance: the batch in
    hand still runs to its end and is acknowledged before the cancellation goes on."""
    acked: list[Sequence[Any]] = []
    handler = Handler()

    async def scenario() -> None:
        drain = asyncio.ensure_future(run_then_ack(handler, ["a", "b"], acked.append))
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
        drain = asyncio.ensure_future(run_then_ack(handler, ["a"], acked.append))
        await handler.started.wait()
        drain.cancel()
        await asyncio.sleep(0.01)
        handler.release.set()
        with pytest.raises(RuntimeError, match="the handler failed"):
            await drain

    asyncio.run(scenario())
    assert acked == []
