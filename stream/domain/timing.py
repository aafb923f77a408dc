"""Pattern timing and the category graph, read from the rule files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

MINUTE = 60_000


def _by_category(table: Mapping[str, object], category: str) -> object | None:
    """Exact match, then dotted parents (``electronics.smartphone`` -> ``electronics``)."""
    key = category
    while key:
        if key in table:
            return table[key]
        key = key.rpartition(".")[0]
    return None


@dataclass(frozen=True, slots=True)
class Timing:
    """How long each pattern waits before a shopper counts as stalled."""

    default_cart_dwell_ms: int = 60 * MINUTE
    cart_dwell_ms: Mapping[str, int] = field(default_factory=dict)
    checkout_abandon_ms: int = 20 * MINUTE
    payment_stall_ms: int = 10 * MINUTE
    payment_stall_by_reason_ms: Mapping[str, int] = field(default_factory=dict)
    unpaid_lead_ms: int = 15 * MINUTE
    companions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _cache: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def cart_dwell(self, category: str) -> int:
        found = self._cache.get(category)
        if found is None:
            match = _by_category(self.cart_dwell_ms, category)
            found = match if isinstance(match, int) else self.default_cart_dwell_ms
            if len(self._cache) < 100_000:
                self._cache[category] = found
        return found

    def payment_stall(self, reason: str | None) -> int:
        if reason is not None:
            return self.payment_stall_by_reason_ms.get(reason, self.payment_stall_ms)
        return self.payment_stall_ms

    def missing_companions(self, categories: list[str]) -> list[str]:
        """Companion categories of the given ones that none of them covers, in order."""
        missing: list[str] = []
        for category in categories:
            wanted = _by_category(self.companions, category)
            if not isinstance(wanted, tuple):
                continue
            for companion in wanted:
                covered = any(c == companion or c.startswith(companion + ".") for c in categories)
                if not covered and companion not in missing:
                    missing.append(companion)
        return missing
