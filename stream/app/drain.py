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
  tracked as unacknowledged while the handler runs, and acknowledges them after it
  returns. A rebalance waits for them: faust's revoke waits until no tracked
  message is unacknowledged (``Consumer.wait_empty``). A handler that raises leaves
  its batch unacknowledged (and the worker stops: a bug, not bad input, which the
  core dead-letters); a drain cancelled while a batch runs (faust stops its fetcher
  when the worker stops) lets the batch run to its end (checkpoint, then publish)
  and acknowledges it. Records the handler marks acked itself
  (``stream/app/stale_events.py``) are never reported;
- tells faust's sensors about the records taken in and acknowledged once per batch
  (``stream/app/batch_sensors.py``), leaving their figures as faust's per-record
  calls would;
- tells faust's monitor when each partition's records last reached processing, as
  faust's stream does (its livelock check reports partitions whose records nothing
  processes for ``stream_processing_timeout``).

Commits stay faust's: its commit timer commits what has been acknowledged.

The loop is pinned to the faust version in ``stream.app.embedded.FAUST_VERSION``:
``tests/unit/test_faust_pins.py`` checks the internals it reads, and the kill -9 and
rebalance tests (``tests/integration/test_faults_crashes.py``) prove it end to end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from functools import partial
from time import monotonic
from typing import Any

from stream.app.batch_sensors import messages_in, messages_out

BatchHandler = Callable[[list[Any]], Awaitable[None]]


async def finish_even_if_cancelled(
    work: Awaitable[None], then: Callable[[], None] | None = None
) -> None:
    """Run a batch to its end even if the task running it is cancelled meanwhile, then
    ``then`` (acknowledge it) if the batch returned.

    A worker stopping cancels the task that runs its batches (faust's fetcher with the
    batch drain, the agent with faust's stream). Cut off between its checkpoint and its
    publish, a batch would be neither done nor safely redone; acknowledged without
    its checkpoint (faust's ``take_events`` acks its events on the way out), it would
    be committed and never processed. So the batch finishes first; the cancellation
    goes on after. A batch that raises is never acknowledged.
    """
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.cancelled():
            raise
        await task  # raises what the batch raised, if it did: no ack then
        if then is not None:
            then()
        raise
    if then is not None:
        then()


class BatchDrain:
    """The drain loop of one app's consumer (see the module's docstring)."""

    def __init__(
        self, app: Any, topics: Collection[str], handle: BatchHandler, batch_max: int
    ) -> None:
        self.app = app
        self.consumer = app.consumer
        self.inputs = frozenset(topics)
        self.handle = handle
        self.batch_max = batch_max

    def install(self) -> None:
        """Make faust's fetcher run this loop instead of the consumer's own."""
        self.consumer._drain_messages = self.drain_messages

    async def drain_messages(self, fetcher: Any) -> None:
        consumer, app = self.consumer, self.app
        try:
            while not (consumer._stopped.is_set() or fetcher._stopped.is_set()):
                await self.drain_once()
        except consumer.consumer_stopped_errors:
            if app.should_stop:  # as faust's loop: a stopping worker ends it quietly
                return
            raise
        except asyncio.CancelledError:
            if app.should_stop:
                return
            raise

    async def drain_once(self) -> None:
        """Take one fetch: hand its input records over in batches, the rest to faust."""
        consumer = self.consumer
        records = consumer.getmany(timeout=1.0)
        await asyncio.sleep(0)  # as faust's loop: never hog the loop between fetches
        if consumer.should_stop:
            return
        batch = await self._take(records)
        for start in range(0, len(batch), self.batch_max):
            chunk = batch[start : start + self.batch_max]
            await finish_even_if_cancelled(self.handle(chunk), partial(self.ack, chunk))
        commit_every = consumer._commit_every
        if commit_every is not None and consumer._n_acked >= commit_every:
            consumer._n_acked = 0
            await consumer.commit()

    async def _take(self, records: Any) -> list[Any]:
        """The fetch's input messages, tracked; faust's read offsets and gaps kept, and
        every other topic's records passed to faust's callback."""
        consumer, app = self.consumer, self.app
        read_offset = consumer._read_offset
        acks_enabled_for = app.topics.acks_enabled_for
        unacked = consumer._unacked_messages
        inputs = self.inputs
        batch: list[Any] = []
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
                batch.append(message)
            else:
                await consumer.wait_first(consumer.callback(message), consumer.suspend_flow.wait())
            read_offset[tp] = offset
        messages_in(app.sensors, batch)  # faust's on_message_in, once per batch
        return batch

    def ack(self, batch: Sequence[Any]) -> None:
        """Acknowledge a handled batch (bar what the handler set aside) and tell faust's
        monitor its partitions' records are being processed."""
        consumer_ack = self.consumer.ack
        done = [message for message in batch if not message.acked]  # bar the set-aside
        for message in done:
            consumer_ack(message)
        messages_out(self.app.sensors, done)  # faust's on_message_out, once per batch
        inbound = self.app.monitor.stream_inbound_time
        now = monotonic()
        for tp in {message.tp for message in batch}:
            inbound[tp] = now


def use_batch_drain(
    app: Any, topics: Collection[str], handle: BatchHandler, batch_max: int
) -> BatchDrain:
    """Make the app's consumer hand fetched records of ``topics`` to ``handle``."""
    drain = BatchDrain(app, topics, handle, batch_max)
    drain.install()
    return drain
