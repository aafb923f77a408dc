"""Reading a topic partition again from the offset its state expects next.

A partition core holds back records past a gap in their topic's offsets and says
from which offset to read again (``stream/domain/progress.py``). Gaps happen when
the consumer starts past records the state never took in (a committed offset ahead
of the checkpoint) or when records are dropped around a rebalance. This module
seeks the consumer back there with faust's ``Consumer.seek``, which also moves
faust's own read offset back (otherwise faust would drop the records read again
as already read), and leaves the held-back events unacknowledged so no commit moves
past them.

Records fetched before the seek keep arriving for a moment and are held back too.
If the gap is still there ``REREAD_WAIT_MS`` after a seek, the worker's timer seeks
again (a seek made while faust's recovery is still seeking to committed offsets is
undone by it); after ``REREAD_TRIES`` seeks the gap is taken to be real
(transaction markers, retention or compaction leave offsets no consumer gets) and
the core goes on from the first record held back past it, with a warning and
``goldenflow_offset_gaps_skipped_total``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faust.types import TP

from stream.app.metrics import Metrics
from stream.domain.engine import PartitionCore, Record

log = logging.getLogger("goldenflow.rereads")

#: How long records fetched before a seek may keep arriving (wall ms).
REREAD_WAIT_MS = 5_000
#: Seeks to the same offset before the gap is taken to be real.
REREAD_TRIES = 3


@dataclass(slots=True)
class _Pending:
    offset: int  # where the state expects the topic to go on
    since_ms: int  # when it last sought there
    tries: int
    first_held: int  # the lowest offset held back past the gap so far


def held_messages(messages: Sequence[Any], held: Sequence[Record]) -> list[Any]:
    """The faust messages behind the records a core held back."""
    if not held:
        return []
    keys = {(r.topic, r.partition, r.offset) for r in held}
    return [m for m in messages if (m.topic, m.partition, m.offset) in keys]


class Rereads:
    """The seeks under way, by (partition, topic)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.pending: dict[tuple[int, str], _Pending] = {}

    def pending_on(self, partition: int) -> bool:
        """True while records of ``partition`` are held back for a read from a gap."""
        return any(p == partition for p, _ in self.pending)

    def forget(self, partitions: Collection[int]) -> None:
        for key in [k for k in self.pending if k[0] in partitions]:
            del self.pending[key]

    async def after_batch(
        self, held: Sequence[Record], cores: Mapping[int, PartitionCore], now_ms: int
    ) -> None:
        """Seek where a batch held records back past a new gap; forget the seeks whose
        gap is filled."""
        self._forget_filled(cores)
        firsts: dict[tuple[int, str], int] = {}
        for r in held:
            key = (r.partition, r.topic)
            firsts[key] = min(firsts.get(key, r.offset), r.offset)
        for (partition, topic), first in firsts.items():
            core = cores.get(partition)
            expected = None if core is None else core.progress.gaps.get(topic)
            if expected is None:  # filled later in the same batch (read again already)
                continue
            pending = self.pending.get((partition, topic))
            if pending is not None and pending.offset == expected:
                # records fetched before the seek, or the seek did not take: the timer
                # seeks again once they have had time to arrive (retry)
                pending.first_held = min(pending.first_held, first)
                continue
            self.pending[(partition, topic)] = _Pending(expected, now_ms, 1, first)
            await self._seek(partition, topic, expected)

    async def retry(self, cores: Mapping[int, PartitionCore], now_ms: int) -> None:
        """Seek again where a gap outlived ``REREAD_WAIT_MS``; after ``REREAD_TRIES``
        seeks take it to be real and go on from the first record held past it."""
        self._forget_filled(cores)
        for (partition, topic), pending in list(self.pending.items()):
            if now_ms - pending.since_ms < REREAD_WAIT_MS:
                continue
            pending.since_ms = now_ms
            pending.tries += 1
            if pending.tries <= REREAD_TRIES:
                await self._seek(partition, topic, pending.offset)
                continue
            first = pending.first_held
            cores[partition].progress.skip_gap(topic, first)
            del self.pending[(partition, topic)]
            self.metrics.offset_gaps.inc()
            log.warning(
                "%s[%d]: no records at offsets %d-%d after reading from there %d times "
                "(transaction markers, retention or compaction): going on from %d",
                topic,
                partition,
                pending.offset,
                first - 1,
                REREAD_TRIES,
                first,
            )
            await self.app.consumer.seek(TP(topic, partition), first)  # it was held back

    def _forget_filled(self, cores: Mapping[int, PartitionCore]) -> None:
        for key in list(self.pending):
            core = cores.get(key[0])
            if core is None or key[1] not in core.progress.gaps:
                del self.pending[key]

    async def _seek(self, partition: int, topic: str, offset: int) -> None:
        await self.app.consumer.seek(TP(topic, partition), offset)
        self.metrics.rereads.inc()
        log.warning(
            "%s[%d]: records from offset %d never reached the partition's state "
            "(the consumer started past them or dropped them around a rebalance): "
            "reading again from there",
            topic,
            partition,
            offset,
        )
