"""Faust's recovery waits out a broker outage instead of crashing the worker."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import KafkaConnectionError

from stream.app.recovery_wait import patient


def test_end_offsets_are_read_again_until_the_brokers_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[tuple[str, ...]] = []

    async def read(*partitions: str) -> dict[str, int]:
        calls.append(partitions)
        if len(calls) == 1:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9)]")
        if len(calls) == 2:
            raise TimeoutError("no fetch response")
        return {p: 7 for p in partitions}

    with caplog.at_level(logging.WARNING, logger="goldenflow.recovery"):
        result = asyncio.run(patient(read, max_pause=0.01)("a", "b"))
    assert result == {"a": 7, "b": 7}
    assert calls == [("a", "b")] * 3
    assert [r.getMessage()[:55] for r in caplog.records] == [
        "end offsets of 2 changelog partitions not read (attempt",
    ] * 2


def test_other_errors_and_cancellation_go_through() -> None:
    async def broken(*partitions: str) -> dict[str, int]:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(patient(broken)("a"))

    async def cancelled() -> None:
        async def never(*partitions: str) -> dict[str, int]:
            raise KafkaConnectionError("down")

        task = asyncio.create_task(patient(never, max_pause=0.01)("a"))
        await asyncio.sleep(0.05)
        task.cancel()  # a rebalance cancels the recovery
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
