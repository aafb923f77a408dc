from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from stream.domain.events import MAX_MESSAGE_BYTES, decode
from stream.domain.timeutil import MIN_TS_MS, epoch_ms, format_ts, parse_ts
from stream.errors import InvalidEvent
from tests.helpers import T0


def raw(**fields: object) -> bytes:
    base: dict[str, object] = {
        "event_id": "e1",
        "type": "cart_add",
        "user_id": "u1",
        "ts": T0,
        "sku": "s1",
        "category": "books",
        "price": 12.5,
    }
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not None})


def test_valid_cart_add_keeps_unknown_fields() -> None:
    ev = decode(raw(campaign="black-friday"), "cart")
    assert (ev.event_id, ev.type, ev.user_id, ev.ts) == ("e1", "cart_add", "u1", T0)
    assert ev.get("campaign") == "black-friday"


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (T0, T0),
        ("2025-11-24T16:00:00Z", T0),
        ("2025-11-25T00:00:00+08:00", T0),
        ("2025-11-24T16:00:00.250Z", T0 + 250),
    ],
)
def test_timestamps_rfc3339_or_epoch_millis(ts: object, expected: int) -> None:
    assert decode(raw(ts=ts)).ts == expected


@pytest.mark.parametrize(
    ("value", "code", "fragment"),
    [
        (b"{not json", "not_json", "not valid JSON"),
        (b"[1, 2]", "not_object", "JSON object"),
        (raw(type="cart_teleport"), "unknown_type", "cart_teleport"),
        (raw(type=None), "missing_field", "'type'"),
        (raw(user_id=None), "missing_field", "'user_id'"),
        (raw(sku=None), "missing_field", "'sku'"),
        (raw(price="free"), "wrong_type", "'price' must be a number"),
        (raw(price=-1), "bad_value", "'price'"),
        (raw(price=True), "wrong_type", "'price'"),
        (raw(user_id=42), "wrong_type", "'user_id' must be text"),
        (raw(ts="2025-11-24T16:00:00"), "bad_timestamp", "no time zone"),
        (raw(ts="yesterday"), "bad_timestamp", "not RFC 3339"),
        (raw(ts=1_764_000_000), "bad_timestamp", "milliseconds"),
        (raw(qty=0), "bad_value", "'qty'"),
        (b"x" * (MAX_MESSAGE_BYTES + 1), "too_large", "limit"),
    ],
)
def test_bad_input_is_rejected_with_an_actionable_reason(
    value: bytes, code: str, fragment: str
) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(value, "cart")
    assert info.value.code == code
    assert fragment in info.value.reason


def test_event_on_the_wrong_topic_is_rejected() -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(raw(), "order")
    assert info.value.code == "wrong_topic"
    assert "cart topic" in info.value.reason


def test_every_type_of_the_contract_decodes() -> None:
    items = [{"sku": "s1", "category": "books", "price": 3.0, "qty": 2}]
    samples = {
        "cart_remove": {"sku": "s1"},
        "cart_view": {},
        "detail_view": {"sku": "s1"},
        "checkout_start": {"checkout_id": "c1", "items": items, "amount": 6.0},
        "checkout_submit": {"checkout_id": "c1"},
        "cashier_enter": {"order_id": "o1", "amount": 6.0, "method": "card"},
        "payment_failed": {"order_id": "o1", "reason": "insufficient_funds"},
        "payment_success": {"order_id": "o1"},
        "order_created": {
            "order_id": "o1",
            "items": items,
            "amount": 6.0,
            "pay_deadline": "2025-11-24T16:30:00Z",
        },
        "order_paid": {"order_id": "o1"},
        "order_cancel_requested": {"order_id": "o1", "reason": "changed_mind"},
        "order_cancelled": {"order_id": "o1"},
    }
    for type_, fields in samples.items():
        body = {"event_id": "e", "type": type_, "user_id": "u", "ts": T0, **fields}
        assert decode(orjson.dumps(body)).type == type_


def test_bad_item_inside_a_checkout_names_its_index() -> None:
    body = {
        "event_id": "e",
        "type": "checkout_start",
        "user_id": "u",
        "ts": T0,
        "checkout_id": "c",
        "items": [{"sku": "a"}, {"category": "books"}],
    }
    with pytest.raises(InvalidEvent) as info:
        decode(orjson.dumps(body), "checkout")
    assert "items[1]" in info.value.reason


@given(st.integers(min_value=-(10**13), max_value=10**14))
@example(1_092_337_876_222)  # read back a millisecond short through float seconds
@example(9_999_999_999_998)  # formatted a millisecond short through float seconds
def test_formatted_times_are_rfc3339_utc_milliseconds_that_read_back(ms: int) -> None:
    """format_ts builds its text from cached minutes: the text of the exact instant
    (integer arithmetic: no float rounding, whatever the year)."""
    text = format_ts(ms)
    instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert text == instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if ms >= MIN_TS_MS:
        assert parse_ts(text) == ms


def test_epoch_ms_is_exact_in_any_zone_and_drops_what_is_past_the_millisecond() -> None:
    nepal = timezone(timedelta(hours=5, minutes=45))
    moment = datetime(2004, 8, 12, 23, 31, 16, 222_999, tzinfo=nepal)
    seconds = calendar.timegm((2004, 8, 12, 23 - 5, 31 - 45, 16))  # timegm normalises
    assert epoch_ms(moment) == seconds * 1000 + 222
    assert parse_ts("2004-08-12T23:31:16.222999+05:45") == seconds * 1000 + 222
