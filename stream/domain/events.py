"""The event contract: decoding and validating input messages.

Input arrives as JSON bytes on four topics (cart, checkout, cashier, order). A
message becomes an :class:`Event` or raises :class:`~stream.errors.InvalidEvent`
with a reason a person can act on. Unknown extra fields are kept in ``body``.

This is the per-event hot path, so it is plain code over ``orjson.loads`` output:
no model objects per event.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from stream.domain.timeutil import parse_ts
from stream.errors import InvalidEvent

#: Largest message accepted, in bytes; larger ones are dead-lettered unread.
MAX_MESSAGE_BYTES: Final = 256 * 1024
MAX_TEXT: Final = 256
MAX_ITEMS: Final = 500
MAX_MONEY: Final = 1e9
#: Latest time accepted in a timestamp field (9999-12-31T23:59:59.999Z): later ones
#: cannot be shown as a date, nor stored as 64-bit milliseconds beyond it.
MAX_TS_MS: Final = 253_402_300_799_999

TOPIC_KINDS: Final = ("cart", "checkout", "cashier", "order")

Validator = Callable[[str, object], object]


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidEvent("wrong_type", f"field {name!r} must be text; got {_kind(value)}")
    if not value or len(value) > MAX_TEXT:
        raise InvalidEvent(
            "bad_value", f"field {name!r} must be 1 to {MAX_TEXT} characters; got {len(value)}"
        )
    return value


def _money(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent("wrong_type", f"field {name!r} must be a number; got {_kind(value)}")
    if not math.isfinite(value) or value < 0 or value > MAX_MONEY:
        raise InvalidEvent(
            "bad_value", f"field {name!r} must be between 0 and {MAX_MONEY:.0f}; got {value!r}"
        )
    return float(value)


def _qty(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent(
            "wrong_type", f"field {name!r} must be a whole number; got {_kind(value)}"
        )
    if value < 1 or value > 10_000:
        raise InvalidEvent("bad_value", f"field {name!r} must be between 1 and 10000; got {value}")
    return value


def _ts(name: str, value: object) -> int:
    ms = parse_ts(value, name)
    if ms > MAX_TS_MS:
        raise InvalidEvent(
            "bad_timestamp",
            f"field {name!r} = {value!r} is after the year 9999; "
            "send epoch milliseconds (not microseconds) or RFC 3339 text",
        )
    return ms


@lru_cache(maxsize=1024)
def _zone_unreadable(name: str) -> bool:
    """True unless the time zone database loads ``name``. Unknown names are refused
    too, not only the ones the database fails on with an OS error (a folder such as
    'America', a name too long for a file): which of those a machine raises depends
    on its zone data, and the result must not."""
    try:
        ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, ValueError, OSError, ...
        return True
    return False


def _timezone(name: str, value: object) -> str:
    text = _text(name, value)
    if _zone_unreadable(text):
        raise InvalidEvent(
            "bad_value",
            f"field {name!r} = {text[:40]!r} is not a known time zone; "
            "send an IANA name such as Asia/Shanghai",
        )
    return text


def _items(name: str, value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise InvalidEvent("wrong_type", f"field {name!r} must be a list; got {_kind(value)}")
    if len(value) > MAX_ITEMS:
        raise InvalidEvent(
            "bad_value", f"field {name!r} has {len(value)} items; at most {MAX_ITEMS}"
        )
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidEvent(
                "wrong_type", f"{name}[{i}] must be an object with sku, category, price, qty"
            )
        if "sku" not in item:
            raise InvalidEvent("missing_field", f"{name}[{i}] lacks required field 'sku'")
        _text(f"{name}[{i}].sku", item["sku"])
        if "category" in item:
            _text(f"{name}[{i}].category", item["category"])
        if "price" in item:
            _money(f"{name}[{i}].price", item["price"])
        if "qty" in item:
            _qty(f"{name}[{i}].qty", item["qty"])
    return value


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


# type -> (topic kind, required fields, optional fields)
_OPTIONAL_ANY: Final[Mapping[str, Validator]] = {"segment": _text, "timezone": _timezone}
SCHEMA: Final[Mapping[str, tuple[str, Mapping[str, Validator], Mapping[str, Validator]]]] = {
    "detail_view": ("cart", {}, {"sku": _text, "category": _text, "price": _money}),
    "cart_add": ("cart", {"sku": _text, "category": _text, "price": _money}, {"qty": _qty}),
    "cart_remove": ("cart", {"sku": _text}, {"category": _text, "price": _money, "qty": _qty}),
    "cart_view": ("cart", {}, {}),
    "checkout_start": ("checkout", {"checkout_id": _text, "items": _items}, {"amount": _money}),
    "checkout_submit": (
        "checkout",
        {"checkout_id": _text},
        {"items": _items, "amount": _money, "order_id": _text},
    ),
    "cashier_enter": ("cashier", {"order_id": _text}, {"amount": _money, "method": _text}),
    "payment_failed": (
        "cashier",
        {"order_id": _text},
        {"amount": _money, "method": _text, "reason": _text},
    ),
    "payment_success": ("cashier", {"order_id": _text}, {"amount": _money, "method": _text}),
    "order_created": (
        "order",
        {"order_id": _text, "items": _items, "amount": _money, "pay_deadline": _ts},
        {"checkout_id": _text},
    ),
    "order_paid": ("order", {"order_id": _text}, {"amount": _money, "method": _text}),
    "order_cancel_requested": ("order", {"order_id": _text}, {"reason": _text}),
    "order_cancelled": ("order", {"order_id": _text}, {"reason": _text}),
}

EVENT_TYPES: Final = tuple(SCHEMA)
#: Topic kind (cart, checkout, cashier, order) of each event type.
TYPE_KIND: Final = {type_: spec[0] for type_, spec in SCHEMA.items()}


class Event:
    """One validated input event. ``body`` is the decoded JSON object, extras kept."""

    __slots__ = ("body", "event_id", "ts", "type", "user_id")

    def __init__(self, event_id: str, type_: str, user_id: str, ts: int, body: dict[str, Any]):
        self.event_id = event_id
        self.type = type_
        self.user_id = user_id
        self.ts = ts
        self.body = body

    def get(self, field: str, default: Any = None) -> Any:
        return self.body.get(field, default)

    def __repr__(self) -> str:
        return f"Event({self.type} {self.event_id} user={self.user_id} ts={self.ts})"


def decode(raw: bytes, topic_kind: str | None = None) -> Event:
    """Decode and validate one message value.

    ``topic_kind`` (cart, checkout, cashier, order) checks the type arrived on its
    own topic; replay from a file passes ``None``.
    """
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidEvent(
            "too_large", f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}"
        )
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(
            "not_json", f"value is not valid JSON ({exc}); send one UTF-8 JSON object per message"
        ) from None
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", f"value must be a JSON object; got a JSON {_kind(obj)}")
    return validate(obj, topic_kind)


def validate(obj: dict[str, Any], topic_kind: str | None = None) -> Event:
    """Validate an already-decoded event object (see :func:`decode`)."""
    type_ = obj.get("type")
    if type_ is None:
        raise InvalidEvent("missing_field", "lacks required field 'type'")
    spec = SCHEMA.get(type_) if isinstance(type_, str) else None
    if spec is None:
        # never the repr of a non-text value: it may be huge or nested past the
        # interpreter's recursion limit
        shown = repr(type_[:40]) if isinstance(type_, str) else f"of JSON kind {_kind(type_)}"
        raise InvalidEvent(
            "unknown_type",
            f"unknown event type {shown}; expected one of: {', '.join(EVENT_TYPES)}",
        )
    kind, required, optional = spec
    if topic_kind is not None and kind != topic_kind:
        raise InvalidEvent(
            "wrong_topic",
            f"event type {type_!r} belongs on the {kind} topic, not the {topic_kind} topic",
        )
    for name in ("event_id", "user_id", "ts"):
        if name not in obj:
            raise InvalidEvent("missing_field", f"{type_} lacks required field {name!r}")
    event_id = _text("event_id", obj["event_id"])
    user_id = _text("user_id", obj["user_id"])
    ts = _ts("ts", obj["ts"])
    for name, check in required.items():
        if name not in obj:
            raise InvalidEvent("missing_field", f"{type_} lacks required field {name!r}")
        check(name, obj[name])
    for table in (optional, _OPTIONAL_ANY):
        for name, check in table.items():
            value = obj.get(name)
            if value is not None:
                check(name, value)
    return Event(event_id, type_, user_id, ts, obj)


def encode(obj: Mapping[str, Any]) -> bytes:
    """Encode an output record (command, dead letter, outcome) as JSON bytes."""
    return orjson.dumps(obj)
