"""Pattern timing read from the rule files: per-category dwell times with a default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Timing:
    """How long each pattern waits before a shopper counts as stalled.

    Categories are matched exactly, then by their dotted parents
    (``electronics.smartphone`` falls back to ``electronics``), then the default.
    """

    default_cart_dwell_ms: int
    cart_dwell_ms: Mapping[str, int] = field(default_factory=dict)
    _cache: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def cart_dwell(self, category: str) -> int:
        found = self._cache.get(category)
        if found is not None:
            return found
        key = category
        dwell = self.default_cart_dwell_ms
        while key:
            if key in self.cart_dwell_ms:
                dwell = self.cart_dwell_ms[key]
                break
            key = key.rpartition(".")[0]
        if len(self._cache) < 100_000:
            self._cache[category] = dwell
        return dwell
