"""Guardrail primitives: holdout assignment, quiet hours, frequency caps, no stacking.

Pure functions over plain values, with event time passed in. The guardrail stage
of the pipeline composes them; each answers with the reason a decision is held
back (``holdout``, ``quiet_hours``, ``cap``, ``stacking``) or lets it through.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

HOUR_MS = 3_600_000


def in_holdout(user_id: str, salt: str, share: float) -> bool:
    """Deterministic control-group membership: the same shopper and salt, the same arm."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(f"{salt}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


@lru_cache(maxsize=512)
def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A nightly window in the shopper's local time, e.g. 22 to 8 (end exclusive)."""

    start_hour: int
    end_hour: int

    def release_ms(
        self, at_ms: int, timezone: str | None, default_timezone: str = "UTC"
    ) -> int | None:
        """If ``at_ms`` falls in the window, the first moment after it; else None."""
        zone = _zone(timezone) or _zone(default_timezone) or UTC
        local = datetime.fromtimestamp(at_ms / 1000, tz=zone)
        hour = local.hour
        start, end = self.start_hour, self.end_hour
        inside = (start <= hour < end) if start < end else (hour >= start or hour < end)
        if not inside or start == end:
            return None
        release = local.replace(hour=end, minute=0, second=0, microsecond=0)
        if release <= local:
            release += timedelta(days=1)
        return int(release.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``limit`` interventions in ``window_ms`` of event time, for one pattern or all."""

    limit: int
    window_ms: int
    pattern: str | None = None  # None: every pattern counts


def capped(
    history: Iterable[tuple[int, str]], pattern: str, at_ms: int, caps: Sequence[Cap]
) -> Cap | None:
    """The first cap a new intervention at ``at_ms`` would break, given the shopper's
    earlier interventions as (event time, pattern); None if it is within every cap."""
    past = list(history)
    for cap in caps:
        if cap.pattern is not None and cap.pattern != pattern:
            continue
        since = at_ms - cap.window_ms
        used = sum(
            1 for ts, p in past if since < ts <= at_ms and (cap.pattern is None or p == cap.pattern)
        )
        if used >= cap.limit:
            return cap
    return None


def stacked(active: Iterable[tuple[str, int]], scope: str, at_ms: int) -> bool:
    """True if an offer for the same order or journey (``scope``) is still active at
    ``at_ms``; ``active`` holds (scope, expires at)."""
    return any(s == scope and at_ms < expires for s, expires in active)
