"""Guardrail primitives: holdout assignment, quiet hours, frequency caps, no stacking.

Pure functions over plain values, with event time passed in. The guardrail stage
of the pipeline composes them; each answers with the reason a decision is held
back (``holdout``, ``quiet_hours``, ``cap``, ``stacking``) or lets it through.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stream.domain.budget import Bucket
from stream.domain.timeutil import epoch_ms

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
        return epoch_ms(release)


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


#: Intervention types that are offers (they cost something and must not stack).
OFFER_TYPES = frozenset({"category_coupon", "payment_coupon", "points", "retention_offer"})


def intervention_cost(
    type_: str, params: Mapping[str, Any], currency: str = "USD"
) -> tuple[float, str | None]:
    """What one command commits: (amount, unit). An offer's points count in points, its
    ``amount`` (or ``coupon``) in its currency; reminders and add-on suggestions are free."""
    if type_ not in OFFER_TYPES:
        return 0.0, None
    points = params.get("points")
    if isinstance(points, int | float) and _positive(points):
        return float(points), "points"
    for key in ("amount", "coupon"):
        value = params.get(key)
        if isinstance(value, int | float) and _positive(value):
            return float(value), str(params.get("currency") or currency)
    return 0.0, None


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True, slots=True)
class Holdout:
    share: float = 0.10
    salt: str = ""


@dataclass(frozen=True, slots=True)
class Guardrails:
    """Every guardrail setting the core applies after a rule decided (rules/guardrails.yaml)."""

    caps: tuple[Cap, ...] = ()
    #: channel -> nightly window; channels not listed (in_app) are never deferred
    quiet_hours: Mapping[str, QuietHours] = field(default_factory=dict)
    #: a command deferred longer than this is suppressed (quiet_hours) instead
    max_defer_ms: int = 12 * HOUR_MS
    #: at most one active offer per order or journey
    stacking: bool = True
    #: how long an offer stays active (no stacking) when its params name no ttl
    offer_ttl_ms: int = 24 * HOUR_MS
    min_intent: float = 0.0
    default_timezone: str = "UTC"
    #: ruleset -> holdout; rulesets not listed use ``default_holdout`` salted by their name
    holdouts: Mapping[str, Holdout] = field(default_factory=dict)
    default_holdout: Holdout = Holdout()
    #: pattern -> attribution window
    attribution_ms: Mapping[str, int] = field(default_factory=dict)
    default_attribution_ms: int = 24 * HOUR_MS
    buckets: Mapping[str, Bucket] = field(default_factory=dict)
    #: share of each bucket split into fixed per-partition slices; the rest is pooled
    slice_share: float = 0.5

    @classmethod
    def off(cls) -> Guardrails:
        """No caps, no stacking, no quiet hours, no holdout, no budgets."""
        return cls(default_holdout=Holdout(0.0), stacking=False)

    def holdout(self, ruleset: str) -> Holdout:
        found = self.holdouts.get(ruleset)
        if found is not None:
            return found
        return Holdout(self.default_holdout.share, self.default_holdout.salt or ruleset)

    def window(self, pattern: str) -> int:
        return self.attribution_ms.get(pattern, self.default_attribution_ms)

    @property
    def max_cap_window_ms(self) -> int:
        return max((c.window_ms for c in self.caps), default=0)
