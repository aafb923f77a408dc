"""Which input offsets a partition's state has seen: replays skipped, gaps caught.

The state of a partition (journeys, deadlines, watermark) is checkpointed with the
next offset of each input topic it has taken in, in the same changelog batch. The
consumer's committed offset is only where reading starts; this record is what the
state says it has seen. So, per topic of the partition:

* a record below the next offset was seen already (read again after a restart or a
  rebalance, from a committed offset behind the checkpoint): it is skipped, neither
  counted as late nor applied twice;
* a record at the next offset is taken in and moves it on;
* a record past it means records in between never reached the state (the consumer
  started past them, or dropped them around a rebalance): it is held back, not taken
  in, and the topic is reported as a gap for the adapter to read again from the next
  offset. Records held back are read again after that seek.

Some gaps are real: transaction markers and records removed by retention or
compaction take offsets no consumer ever gets. The adapter decides when a gap has
been read again often enough to be one, and calls :meth:`Progress.skip_gap` with
the first offset there is after it.

A topic not heard from yet (a new partition, a checkpoint written before progress
was kept) takes whatever comes first.
"""

from __future__ import annotations

from typing import Any

#: what a record is to the state: take it in, seen already, or past a gap
TAKE, SEEN, AHEAD = 0, 1, 2


class Progress:
    __slots__ = ("gaps", "next")

    def __init__(self) -> None:
        #: topic -> the next offset the state expects
        self.next: dict[str, int] = {}
        #: topic -> the next offset, for topics with a record held back past it
        self.gaps: dict[str, int] = {}

    def check(self, topic: str, offset: int) -> int:
        """TAKE, SEEN or AHEAD for the record at ``offset`` of ``topic``."""
        if offset < 0:  # no offset known (tests, files): nothing to check
            return TAKE
        expected = self.next.get(topic)
        if expected is None or offset == expected:
            self.next[topic] = offset + 1
            self.gaps.pop(topic, None)
            return TAKE
        if offset < expected:
            return SEEN
        self.gaps[topic] = expected
        return AHEAD

    def skip_gap(self, topic: str, to_offset: int) -> None:
        """The offsets of ``topic`` before ``to_offset`` hold no records: expect that one."""
        if to_offset > self.next.get(topic, -1):
            self.next[topic] = to_offset
        self.gaps.pop(topic, None)

    def snapshot(self) -> dict[str, int]:
        return dict(self.next)

    def restore(self, snap: dict[str, Any]) -> None:
        """Continue from a checkpoint; never go back behind what is held already."""
        for topic, offset in snap.items():
            if isinstance(offset, int) and offset > self.next.get(topic, -1):
                self.next[topic] = offset
