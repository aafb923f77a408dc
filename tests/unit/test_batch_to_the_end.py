"""A batch cut off by a stopping worker still finishes before its events are acked."""

from __future__ import annotations

import asyncio

import pytest

from stream.app.drain import finish_even_if_cancelled


def test_a_cancelled_agent_finishes_its_batch_then_stops() -> None:
    steps: list[str] = []

    async def batch() -> None:
        steps.append("stepped")
        await asyncio.sleep(0.05)  # checkpoint and publish, awaited
        steps.append("checkpointed and published")

    async def agent() -> None:
        await finish_even_if_cancelled(batch())
        steps.append("next batch")  # never: the agent was cancelled

    async def main() -> None:
        task = asyncio.create_task(agent())
        await asyncio.sleep(0.01)
        task.cancel()  # the worker stops mid-batch
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert steps == ["stepped", "checkpointed and published"]


def test_a_batch_that_fails_still_fails() -> None:
    async def batch() -> None:
        raise RuntimeError("broken batch")

    with pytest.raises(RuntimeError, match="broken batch"):
        asyncio.run(finish_even_if_cancelled(batch()))
