"""Faust's table recovery, made to wait out a broker outage instead of crashing.

On every assignment faust's recovery asks the consumer for the changelogs' end
offsets (``Consumer.highwaters``, checked by a test against the pinned faust
version). If the brokers cannot be reached at that moment (an outage ends, the
group rebalances, and the brokers go again) the call raises, faust's recovery
service crashes and takes the worker down with it. Wrapped here, the call is
retried with a growing pause until the brokers answer; a rebalance cancels the
wait as it cancels the recovery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import KafkaError

log = logging.getLogger("goldenflow.recovery")

Highwaters = Callable[..., Awaitable[Any]]


def patient(read: Highwaters, *, max_pause: float = 5.0) -> Highwaters:
    """``read`` retried on broker errors and timeouts until it answers."""

    async def highwaters(*partitions: Any) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await read(*partitions)
            except (KafkaError, TimeoutError) as exc:
                log.warning(
                    "end offsets of %d changelog partitions not read (attempt %d: %s); "
                    "trying again",
                    len(partitions),
                    attempt,
                    exc,
                )
                await asyncio.sleep(min(max_pause, 0.5 * attempt))

    return highwaters


def wait_out_outages(app: Any) -> None:
    """Make the consumer's end-offset reads that recovery relies on patient."""
    app.consumer.highwaters = patient(app.consumer.highwaters)
