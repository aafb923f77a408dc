"""The journeys of one partition: live objects while in use, snapshot bytes at rest.

A journey is a live :class:`~stream.domain.journey.Journey` from the moment the
core touches it (an event, a deadline, a delivery) until the next checkpoint.
The checkpoint encodes it anyway (the changelog record); from then on the store
keeps only those bytes, and the next touch decodes them again. A journey at rest
costs its snapshot (a few hundred bytes) instead of a tree of Python objects,
and the bytes are the very object handed to the changelog, so a table that keeps
a local copy of each snapshot shares it.

``snapshot`` / ``from_snapshot`` round-trip a journey exactly (the restore after a
crash or a rebalance relies on the same), so resting changes nothing the core
decides.
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

    __slots__ = ("_live", "_rest")

    def __init__(self) -> None:
        self._live: dict[str, Journey] = {}
        self._rest: dict[str, bytes] = {}

    def get(self, user: str, default: Journey | None = None) -> Journey | None:  # type: ignore[override]
        journey = self._live.get(user)
        if journey is not None:
            return journey
        raw = self._rest.pop(user, None)
        if raw is None:
            return default
        journey = self._live[user] = Journey.from_snapshot(user, orjson.loads(raw))
        return journey

    def __getitem__(self, user: str) -> Journey:
        journey = self.get(user)
        if journey is None:
            raise KeyError(user)
        return journey

    def __setitem__(self, user: str, journey: Journey) -> None:
        self._rest.pop(user, None)
        self._live[user] = journey

    def __delitem__(self, user: str) -> None:
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
        self._rest[user] = snapshot
