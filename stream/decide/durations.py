"""Human durations in rule files: ``90s``, ``15m``, ``2h``, ``7d``, ``1h30m``."""

from __future__ import annotations

import re

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:ms|s|m|h|d))+")


def parse_duration(value: object) -> int:
    """Milliseconds from ``"10m"``-style text; raises ValueError with the accepted forms."""
    if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        return sum(int(n) * _UNIT_MS[u] for n, u in _PART.findall(value.strip()))
    raise ValueError(
        f"{value!r} is not a duration; write a number with a unit: 90s, 15m, 2h, 7d or 1h30m"
    )


def format_duration(ms: int) -> str:
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    if ms or not parts:
        parts.append(f"{ms}ms")
    return "".join(parts)
