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
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


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
        "caught_up_since",
        "idle_ms",
        "last_event_wall_ms",
        "lateness_ms",
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
        src.idle = False
        if src.max_ts is None or ts_ms > src.max_ts:
            src.max_ts = ts_ms
            self._recompute()
        return self.value

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
        if not caught_up:
            self.caught_up_since = None
        elif self.caught_up_since is None:
            self.caught_up_since = now_ms
        since = self.caught_up_since
        all_idle = True
        for src in self._sources.values():
            last = src.last_wall_ms
            src.idle = (
                since is not None and last is not None and now_ms - max(last, since) >= idle_ms
            )
            all_idle = all_idle and src.idle
        self._recompute()
        last_event = self.last_event_wall_ms
        newest = self.max_event_ms
        if all_idle and last_event is not None and newest is not None:
            candidate = newest - self.lateness_ms + (now_ms - last_event)
            if self.value is None or candidate > self.value:
                self.value = candidate
        return self.value != before
