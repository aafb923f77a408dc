"""The journeys of one partition: live objects while in use, snapshot bytes at rest.

A journey is a live :class:`~stream.domain.journey.Journey` from the moment the
core touches it (an event, a deadline, a delivery). Each checkpoint encodes the
journeys that changed (the changelog records) and then *settles* the store: a
journey nobody touched since the checkpoint before goes to rest as its last
snapshot bytes, and the next touch decodes them again. A journey at rest costs
its snapshot (a few hundred bytes) instead of a tree of Python objects, and the
bytes are the very object handed to the changelog, so a table that keeps a local
copy of each snapshot shares it.

Keeping a journey touched in the last checkpoint live until the next one spares
the decode and encode a busy shopper would otherwise cost at every batch (the
delivery that empties its outbox right after a checkpoint, its next event, its
deadlines), while memory stays bounded by what two checkpoints touch.

``snapshot`` / ``from_snapshot`` round-trip a journey exactly (the restore after a
crash or a rebalance relies on the same), so resting changes nothing the core
decides. A live journey goes to rest as the bytes it was last saved as, so the
core must mark every journey it changes dirty (and save it again) before the
store settles: :meth:`~stream.domain.engine.PartitionCore.take_dirty` does both.
The one exception is a change the saved bytes give again at a later watermark (a
notification that only applies buffered changes or drops expired state: no fact,
no outcome, no release). Such a journey *drifts*: it is not written to the
changelog for it (a restored copy applies the same changes when the watermark
next moves), and goes to rest encoded afresh.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

import orjson

from stream.domain.journey import Journey


def encode_snapshot(journey: Journey) -> bytes:
    """The journey's snapshot as JSON bytes, in a buffer of its own size.

    orjson returns its output in the buffer it wrote to, several KiB even for a
    few hundred bytes of JSON; a snapshot is kept (at rest here, and in the table's
    local copy), so it is copied into a bytes object that holds just the JSON.
    """
    return bytes(memoryview(orjson.dumps(journey.snapshot())))


class JourneyStore(MutableMapping[str, Journey]):
    """user id -> journey; reading a journey at rest brings it back to life."""

    __slots__ = ("_live", "_rest", "_saved", "_used", "refreshed")

    def __init__(self) -> None:
        self._live: dict[str, Journey] = {}
        self._rest: dict[str, bytes] = {}
        #: the snapshot bytes a live journey was last saved (or revived) as
        self._saved: dict[str, bytes] = {}
        #: users whose journeys were read or set since the last settle
        self._used: set[str] = set()
        #: journeys the last settle put to rest as bytes never saved (drifted ones): a
        #: local copy of the table may take them instead of the changelog's (equal in
        #: what they decide) and share the bytes again
        self.refreshed: list[tuple[str, bytes]] = []

    def get(self, user: str, default: Journey | None = None) -> Journey | None:  # type: ignore[override]
        journey = self._live.get(user)
        if journey is not None:
            self._used.add(user)
            return journey
        raw = self._rest.pop(user, None)
        if raw is None:
            return default
        journey = self._live[user] = Journey.from_snapshot(user, orjson.loads(raw))
        self._saved[user] = raw
        self._used.add(user)
        return journey

    def __getitem__(self, user: str) -> Journey:
        journey = self.get(user)
        if journey is None:
            raise KeyError(user)
        return journey

    def __setitem__(self, user: str, journey: Journey) -> None:
        self._rest.pop(user, None)
        self._saved.pop(user, None)
        self._live[user] = journey
        self._used.add(user)

    def __delitem__(self, user: str) -> None:
        self._saved.pop(user, None)
        self._used.discard(user)
        if self._live.pop(user, None) is None and self._rest.pop(user, None) is None:
            raise KeyError(user)

    def __contains__(self, user: object) -> bool:
        return user in self._live or user in self._rest

    def __len__(self) -> int:
        return len(self._live) + len(self._rest)

    def __iter__(self) -> Iterator[str]:
        yield from list(self._live)
        yield from list(self._rest)

    def live(self) -> list[str]:
        """The users whose journeys are live objects now."""
        return list(self._live)

    def rest(self, user: str, snapshot: bytes) -> None:
        """Keep only ``snapshot`` (the journey's encoded :meth:`Journey.snapshot`) for
        ``user`` until it is read again."""
        self._live.pop(user, None)
        self._saved.pop(user, None)
        self._used.discard(user)
        self._rest[user] = snapshot

    def saved(self, user: str, snapshot: bytes) -> None:
        """The live journey of ``user`` now is what ``snapshot`` encodes (a checkpoint)."""
        self._saved[user] = snapshot

    def drift(self, user: str) -> None:
        """The live journey of ``user`` moved on from its saved bytes only in ways those
        bytes give again at a later watermark (buffered changes applied, state past the
        horizon dropped): not worth a changelog record, but it must not go to rest as
        the old bytes either (its deadline is already past them), so it is encoded
        afresh when it does."""
        self._saved.pop(user, None)

    def settle(self) -> None:
        """Put to rest every live journey untouched since the last settle, as the bytes
        it was last saved as (encoded afresh only if it never was)."""
        used = self._used
        live = self._live
        self.refreshed = refreshed = []
        if len(used) < len(live):
            saved = self._saved
            for user in [u for u in live if u not in used]:
                journey = live.pop(user)
                raw = saved.pop(user, None)
                if raw is None:
                    raw = encode_snapshot(journey)
                    refreshed.append((user, raw))
                self._rest[user] = raw
        self._used = set()
