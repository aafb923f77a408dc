"""Events fetched for a group generation that has since ended: set aside, unprocessed.

Events can reach the worker's handler after the group generation they were fetched
in has ended: a fetch the batch drain (``stream/app/drain.py``) took just before a
rebalance waits for the pipeline's lock, which the rebalance holds, and faust's
``take_events`` (the per-event path) keeps a batch buffer of its own whose events
are still handed to the agent after the partitions were revoked. Stepping them
would let a worker that no longer owns a partition write journeys and a watermark
into that partition's changelog, over its new owner's state (the new owner
restores from the changelog and reads from the committed offset, so it processes
those events itself). A partition this worker keeps is sought back to its
committed offset after the rebalance and fetched again, so nothing is lost by
leaving the old fetch alone.

Leaving them alone includes not acknowledging them: both paths ack every event of a
batch after the handler returns, and an ack of an event nobody processed could let
the next commit of a partition this worker keeps move past it. (Faust's stream
drops events of an old generation that have not reached the buffer yet; its
pure-Python iterator, ``Stream._py_aiter``, acknowledges them, the compiled one
does not.) Marking the message acked beforehand
makes faust's ``Message.ack`` return without telling the consumer, and the
consumer's wait for unacked messages drops acked ones; both are checked by
``tests/unit/test_faust_pins.py`` against the pinned faust version
(``stream.app.embedded.FAUST_VERSION``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any


def split_current(
    messages: Sequence[Any], generation: int, assignment: Collection[Any]
) -> tuple[list[Any], list[Any]]:
    """(messages to process, stale messages): stale ones were fetched in another group
    generation, or belong to a topic partition the consumer is not assigned now."""
    current: list[Any] = []
    stale: list[Any] = []
    for msg in messages:
        if msg.generation_id == generation and msg.tp in assignment:
            current.append(msg)
        else:
            stale.append(msg)
    return current, stale


def set_aside(messages: Sequence[Any]) -> None:
    """Never acknowledge these messages (see the module's docstring)."""
    for msg in messages:
        msg.acked = True
