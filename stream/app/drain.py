"""Whole fetches to the worker, instead of faust's per-event path.

faust's consumer drains each fetch one record at a time: per record it awaits the
conductor's callback raced against the flow-control event (``Service.wait_first``:
tasks and an ``asyncio.wait`` per record), the callback decodes the record and puts
it on the agent's queue, and the agent's stream takes it off again with four sensor
calls. Measured on the benchmark traffic, that path delivered batches of ~190 events
per 20 ms to a worker that does all its work per batch anyway.

``use_batch_drain`` replaces the drain loop of the app's consumer
(``Consumer._drain_messages``, started by faust's ``Fetcher``) with one that

- takes each fetch through faust's own ``Consumer.getmany``, which keeps faust's
  flow control, group generation and paused-partition rules;
- keeps faust's read offsets and offset gaps as its loop does (a record at or below
  the offset last read is dropped; a jump in an acknowledged topic is registered so
  commits can pass it);
- hands every other topic's records (table changelogs during recovery) to faust's
  callback exactly as faust does;
- gives the input topics' records to the handler as lists of at most ``batch_max``,
  tracked as unacknowledged while the handler runs (so a rebalance waits for the
  batch), and acknowledges them after it returns. A handler that raises leaves its
  batch unacknowledged; one cancelled by faust (a rebalance stops the fetcher) first
  runs to its end (checkpoint, then publish) and is then acknowledged. Records the
  handler marks acked itself (``stream/app/stale_events.py``) are never reported.

Commits stay faust's: its commit timer commits what has been acknowledged.

The loop is pinned to the faust version in ``stream.app.embedded.FAUST_VERSION``:
``tests/unit/test_faust_pins.py`` checks the internals it reads, and the kill -9 and
rebalance tests (``tests/integration/test_faults_crashes.py``) prove it end to end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

BatchHandler = Callable[[list[Any]], Awaitable[None]]


async def run_then_ack(
    handle: BatchHandler, batch: list[Any], ack: Callable[[Sequence[Any]], None]
) -> None:
    """Run the handler on the batch; acknowledge the batch once it has returned.

    A cancellation (faust stopping its fetcher in a rebalance, or the worker stopping)
    waits for the batch to finish first: cut off between its checkpoint and its
    publish, the batch would be neither done nor safely redone.
    """
    task = asyncio.ensure_future(handle(batch))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.cancelled():
            raise
        await task  # raises what the handler raised, if it did: no ack then
        ack(batch)
        raise
    ack(batch)


def use_batch_drain(
    app: Any, topics: Collection[str], handle: BatchHandler, batch_max: int
) -> None:
    """Make the app's consumer hand fetched records of ``topics`` to ``handle``."""
    consumer = app.consumer
    inputs = frozenset(topics)

    def ack(batch: Sequence[Any]) -> None:
        consumer_ack = consumer.ack
        on_message_out = app.sensors.on_message_out
        for message in batch:
            if not message.acked:  # set aside by the handler: never reported
                consumer_ack(message)
                on_message_out(message.tp, message.offset, message)

    async def drain_messages(fetcher: Any) -> None:
        callback = consumer.callback
        consumer_should_stop = consumer._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = consumer._read_offset
        acks_enabled_for = app.topics.acks_enabled_for
        unacked = consumer._unacked_messages
        on_message_in = app.sensors.on_message_in
        commit_every = consumer._commit_every
        while not (consumer_should_stop() or fetcher_should_stop()):
            batch: list[Any] = []
            records = consumer.getmany(timeout=1.0)
            await asyncio.sleep(0)  # as faust's loop: never hog the loop between fetches
            if consumer.should_stop:
                break
            async for tp, message in records:
                offset = message.offset
                last = read_offset[tp]
                if last is not None and offset < last:
                    continue  # read already (faust drops these too)
                if last and offset - last > 1 and acks_enabled_for(message.topic):
                    await consumer._add_gap(tp, last + 1, offset)
                if tp.topic in inputs:
                    message.tracked = True
                    unacked.add(message)
                    on_message_in(tp, offset, message)
                    batch.append(message)
                else:
                    await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
                read_offset[tp] = offset
            for start in range(0, len(batch), batch_max):
                await run_then_ack(handle, batch[start : start + batch_max], ack)
            if commit_every is not None and consumer._n_acked >= commit_every:
                consumer._n_acked = 0
                await consumer.commit()

    consumer._drain_messages = drain_messages
