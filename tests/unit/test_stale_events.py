"""Events fetched before a rebalance are set aside unprocessed and unacknowledged."""

from __future__ import annotations

from faust.types import TP
from faust.types.tuples import ConsumerMessage, Message

from stream.app.stale_events import set_aside, split_current


def message(topic: str, partition: int, offset: int, generation: int) -> Message:
    msg = ConsumerMessage(topic, partition, offset, 0.0, 0, None, b"k", b"{}", None)
    msg.generation_id = generation
    return msg


class RecordingConsumer:
    """Stands in for the consumer a ConsumerMessage reports its final ack to."""

    def __init__(self) -> None:
        self.acked: list[Message] = []

    def ack(self, message: Message) -> bool:
        self.acked.append(message)
        return True


def test_events_of_an_old_generation_or_an_unassigned_partition_are_stale() -> None:
    assignment = {TP("cart", 0), TP("order", 0), TP("cart", 2)}
    keep = [message("cart", 0, 10, 7), message("order", 0, 3, 7), message("cart", 2, 1, 7)]
    old = message("cart", 0, 9, 6)  # fetched before the rebalance, partition kept
    gone = message("cart", 1, 4, 7)  # a partition another worker owns now
    current, stale = split_current([old, *keep, gone], 7, assignment)
    assert current == keep
    assert stale == [old, gone]


def test_a_set_aside_event_is_never_acknowledged_to_the_consumer() -> None:
    stale = message("cart", 1, 4, 6)
    fresh = message("cart", 0, 5, 7)
    set_aside([stale])
    consumer = RecordingConsumer()
    for m in (stale, fresh):
        m.refcount = 1  # one stream holds each
        m.ack(consumer)  # type: ignore[arg-type]
    assert consumer.acked == [fresh]
