"""Event-time helpers. All times in the core are integer epoch milliseconds (UTC)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from stream.errors import InvalidEvent

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

#: Earliest event time accepted (2000-01-01T00:00:00Z); anything older is a unit mistake.
MIN_TS_MS = 946_684_800_000


def parse_ts(value: object, field: str = "ts") -> int:
    """Parse an event time: RFC 3339 with a zone, or epoch milliseconds."""
    if isinstance(value, bool):
        raise InvalidEvent(
            "wrong_type",
            f"field {field!r} must be RFC 3339 text with a zone or epoch milliseconds; "
            "got a boolean",
        )
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent("bad_value", f"field {field!r} is not a finite number: {value!r}")
        ms = int(value)
    elif isinstance(value, str):
        ms = _parse_rfc3339(value, field)
    else:
        raise InvalidEvent(
            "wrong_type",
            f"field {field!r} must be RFC 3339 text with a zone or epoch milliseconds; "
            f"got {type(value).__name__}",
        )
    if ms < MIN_TS_MS:
        raise InvalidEvent(
            "bad_timestamp",
            f"field {field!r} = {value!r} is before 2000-01-01; "
            "send epoch milliseconds (not seconds) or RFC 3339 text",
        )
    return ms


def _parse_rfc3339(text: str, field: str) -> int:
    if len(text) > 64:
        raise InvalidEvent("bad_timestamp", f"field {field!r} is too long for a timestamp")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEvent(
            "bad_timestamp",
            f"field {field!r} = {text[:40]!r} is not RFC 3339 "
            "(expected e.g. 2026-11-25T10:00:00Z or 2026-11-25T18:00:00+08:00)",
        ) from None
    if parsed.tzinfo is None:
        raise InvalidEvent(
            "bad_timestamp",
            f"field {field!r} = {text[:40]!r} has no time zone; add 'Z' or an offset like +08:00",
        )
    return epoch_ms(parsed)


def epoch_ms(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime, by integer arithmetic (whatever is past
    the millisecond dropped). ``int(moment.timestamp() * 1000)`` goes through float
    seconds and lands a millisecond short for about one fraction in 200
    (``...876.222Z`` read as ``...876221``)."""
    return (moment - _EPOCH) // _ONE_MS


@lru_cache(maxsize=4096)
def format_ts(ms: int) -> str:
    """Format epoch milliseconds as RFC 3339 UTC text with millisecond precision.

    Cached: a decision formats the same fact time for its record and its command.
    The date, hour and minute come from a cache of their own (times of one batch
    share their minutes); seconds and milliseconds are plain arithmetic.
    """
    return f"{_minute_text(ms // MINUTE)}:{ms // SECOND % 60:02d}.{ms % SECOND:03d}Z"


@lru_cache(maxsize=1024)
def _minute_text(minute: int) -> str:
    """``YYYY-MM-DDTHH:MM`` of a minute since the epoch (UTC)."""
    return datetime.fromtimestamp(minute * 60, tz=UTC).isoformat(timespec="minutes")[:-6]
