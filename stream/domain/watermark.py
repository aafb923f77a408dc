"""Per-partition event-time watermark over several input topics.

A partition of goldenflow reads the same partition number of four topics (cart,
checkout, cashier, order). Consumers interleave those topics arbitrarily, so the
watermark is the *minimum* of the sources' progress minus the allowed lateness,
never decreasing: one fast topic cannot make another topic's events late.

Live mode (``now_ms`` given) also handles silence, like stream processors' idle
sources: a source that has sent nothing for ``idle_ms`` of wall-clock time stops
holding the watermark back, and when every source is idle the watermark follows
the wall clock from the last event, so deadlines still fire when traffic stops.
Replay has no wall clock and one merged source, which keeps it deterministic.

Idleness is a reading of the consumer's position at one moment, and it expires: a
source marked idle stops holding the watermark back only until ``IDLE_READING_MS``
after the refresh that marked it. If no refresh confirms it by then (the worker was
held up, say by a batch publishing through a broker outage), events of the other
sources count every source again, and the caught-up streak starts over. Otherwise
a mark made just before an outage would let the first batch after it move the
watermark past what the quiet topics hold in the broker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: An idle mark not confirmed by a refresh for this long no longer counts (wall ms).
IDLE_READING_MS = 2_000


class _Source:
    __slots__ = ("idle", "last_wall_ms", "max_ts")

    def __init__(self, start_wall_ms: int | None) -> None:
        self.max_ts: int | None = None
        self.last_wall_ms = start_wall_ms
        self.idle = False


class Watermark:
    __slots__ = (
        "_single",
        "_sources",
        "any_idle",
        "caught_up_since",
        "idle_ms",
        "last_event_wall_ms",
        "lateness_ms",
        "refreshed_at",
        "value",
    )

    def __init__(
        self,
        lateness_ms: int,
        sources: Iterable[str] | None = None,
        idle_ms: int = 5_000,
        start_wall_ms: int | None = None,
    ) -> None:
        self.lateness_ms = lateness_ms
        self.idle_ms = idle_ms
        self.value: int | None = None
        self.last_event_wall_ms: int | None = None
        #: wall clock since when the consumer has been caught up without a break
        self.caught_up_since: int | None = None
        #: wall clock of the last refresh, and whether it left any source idle
        self.refreshed_at: int | None = None
        self.any_idle = False
        names = list(sources) if sources is not None else [""]
        self._single = sources is None
        self._sources = {name: _Source(start_wall_ms) for name in names}

    @property
    def max_event_ms(self) -> int | None:
        seen = [s.max_ts for s in self._sources.values() if s.max_ts is not None]
        return max(seen) if seen else None

    def is_late(self, ts_ms: int) -> bool:
        return self.value is not None and ts_ms < self.value

    def observe(self, source: str | None, ts_ms: int, now_ms: int | None) -> int | None:
        """Record an event of ``source``; return the (possibly advanced) watermark."""
        name = "" if self._single or source is None else source
        src = self._sources.get(name)
        if src is None:
            src = self._sources[name] = _Source(now_ms)
        if now_ms is not None:
            src.last_wall_ms = now_ms
            self.last_event_wall_ms = now_ms
            if self.any_idle and self._expired(now_ms):
                self._forget_idleness()
        src.idle = False
        if src.max_ts is None or ts_ms > src.max_ts:
            src.max_ts = ts_ms
            self._recompute()
        return self.value

    def _expired(self, now_ms: int) -> bool:
        """No refresh within ``IDLE_READING_MS``: what the last one said is not known now."""
        return self.refreshed_at is None or now_ms - self.refreshed_at > IDLE_READING_MS

    def _forget_idleness(self) -> None:
        for src in self._sources.values():
            src.idle = False
        self.any_idle = False
        self.caught_up_since = None

    def _recompute(self) -> None:
        low: int | None = None
        for src in self._sources.values():
            if src.idle:
                continue
            if src.max_ts is None:
                return  # a source not heard from yet (and not idle) holds it back
            if low is None or src.max_ts < low:
                low = src.max_ts
        if low is None:
            return
        candidate = low - self.lateness_ms
        if self.value is None or candidate > self.value:
            self.value = candidate

    def snapshot(self) -> list[Any]:
        """Progress worth keeping across a restart or a partition move."""
        return [self.value, {name: src.max_ts for name, src in self._sources.items()}]

    def restore(self, snap: list[Any], now_ms: int | None) -> None:
        """Continue from a snapshot: the same watermark, the same per-source progress."""
        value, maxima = snap
        if value is not None and (self.value is None or value > self.value):
            self.value = value
        for name, max_ts in maxima.items():
            src = self._sources.get(name)
            if src is None:
                src = self._sources[name] = _Source(now_ms)
            if max_ts is not None and (src.max_ts is None or max_ts > src.max_ts):
                src.max_ts = max_ts

    def refresh(self, now_ms: int, caught_up: bool = True) -> bool:
        """Live mode: mark silent sources idle and follow the wall clock when all are.

        ``caught_up`` says the consumer has read everything there is to read on this
        partition's topics, as a broker answered recently. Only then can silence mean a
        quiet topic rather than a backlog still waiting behind other topics' records, or
        behind a broker that cannot be reached; otherwise nothing is marked idle. Silence
        counts from the later of a source's last event and the moment the consumer was
        last found caught up after a break, so a backlog or an outage longer than
        ``idle_ms`` does not make every topic idle the instant it ends (records held in
        producers during an outage arrive just after it). Returns True if the watermark
        moved.
        """
        before = self.value
        idle_ms = self.idle_ms
        if self._expired(now_ms):  # a gap in the readings breaks the caught-up streak
            self.caught_up_since = None
        self.refreshed_at = now_ms
        if not caught_up:
            self.caught_up_since = None
        elif self.caught_up_since is None:
            self.caught_up_since = now_ms
        since = self.caught_up_since
        all_idle = True
        any_idle = False
        for src in self._sources.values():
            last = src.last_wall_ms
            src.idle = (
                since is not None and last is not None and now_ms - max(last, since) >= idle_ms
            )
            all_idle = all_idle and src.idle
            any_idle = any_idle or src.idle
        self.any_idle = any_idle
        self._recompute()
        last_event = self.last_event_wall_ms
        newest = self.max_event_ms
        if all_idle and last_event is not None and newest is not None:
            candidate = newest - self.lateness_ms + (now_ms - last_event)
            if self.value is None or candidate > self.value:
                self.value = candidate
        return self.value != before
