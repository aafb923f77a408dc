"""Every journey pattern, table-driven, through the batch step with explicit event times."""

from __future__ import annotations

from typing import Any

import pytest

from stream.domain.engine import CoreConfig, PartitionCore
from stream.domain.timeutil import DAY, HOUR, MINUTE, SECOND, format_ts
from tests.helpers import T0, EventMaker, core, rec

ITEM = {"sku": "phone-1", "category": "electronics.smartphone", "price": 500.0, "qty": 1}


def fired(c: PartitionCore, events: list[dict[str, Any]], until: int | None = None) -> list[tuple]:
    """(pattern, subject-ish, fired_at) of every command, after moving event time to ``until``."""
    ev = EventMaker()
    batch = [rec(e) for e in events]
    if until is not None:
        batch.append(rec(ev("cart_view", "zz-clock", until, event_id="clock-" + str(until))))
    out = c.step(batch, now_ms=None)
    # detections, whatever the rules then decide about them
    return [(fact.pattern, fact.subject, format_ts(fact.at_ms)) for fact in out.facts]


def at(ms: int) -> str:
    return format_ts(ms)


E = EventMaker()
START = E(
    "checkout_start",
    "amy",
    T0,
    checkout_id="c1",
    items=[ITEM | {"sku": "case-1", "category": "electronics.accessories"}],
    amount=520.0,
)
SUBMIT = E("checkout_submit", "amy", T0 + 5 * MINUTE, checkout_id="c1")
ORDER = E(
    "order_created",
    "amy",
    T0 + 6 * MINUTE,
    order_id="o1",
    checkout_id="c1",
    items=[ITEM],
    amount=500.0,
    pay_deadline=T0 + 36 * MINUTE,
)
ORDER_NO_CHECKOUT_ID = E(
    "order_created",
    "amy",
    T0 + 6 * MINUTE,
    order_id="o1",
    items=[ITEM],
    amount=500.0,
    pay_deadline=T0 + 36 * MINUTE,
)
CASHIER = E("cashier_enter", "amy", T0 + 7 * MINUTE, order_id="o1", amount=500.0, method="card")
FAILED = E("payment_failed", "amy", T0 + 8 * MINUTE, order_id="o1", reason="insufficient_funds")
FAILED_OTHER = E("payment_failed", "amy", T0 + 8 * MINUTE, order_id="o1", reason="mystery")
SUCCESS = E("payment_success", "amy", T0 + 9 * MINUTE, order_id="o1")
PAID = E("order_paid", "amy", T0 + 9 * MINUTE, order_id="o1")
CANCELLED = E("order_cancelled", "amy", T0 + 9 * MINUTE, order_id="o1")


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # checkout_abandon: started, not submitted, no order within 20m
        ([START], [("checkout_abandon", "c1", at(T0 + 20 * MINUTE))]),
        ([START, SUBMIT], []),
        ([START, ORDER], [("unpaid_order", "o1", at(T0 + 21 * MINUTE))]),
        ([START, ORDER_NO_CHECKOUT_ID], [("unpaid_order", "o1", at(T0 + 21 * MINUTE))]),
        # unpaid_order: 15m before the pay deadline, unless paid or cancelled
        ([ORDER, PAID], []),
        ([ORDER, CANCELLED], []),
        # payment_stall: at the cashier 10m with no success; a failure's reason sets its wait
        (
            [ORDER, CASHIER],
            [
                ("payment_stall", "o1", at(T0 + 17 * MINUTE)),
                ("unpaid_order", "o1", at(T0 + 21 * MINUTE)),
            ],
        ),
        ([ORDER, CASHIER, SUCCESS], []),
        (
            [ORDER, CASHIER, FAILED],
            [
                ("payment_stall", "o1", at(T0 + 11 * MINUTE)),
                ("unpaid_order", "o1", at(T0 + 21 * MINUTE)),
            ],
        ),
        (
            [ORDER, CASHIER, FAILED_OTHER],
            [
                ("payment_stall", "o1", at(T0 + 17 * MINUTE)),
                ("unpaid_order", "o1", at(T0 + 21 * MINUTE)),
            ],
        ),
        # orphans: payments for an order never seen created are handled, not errors
        ([CASHIER], [("payment_stall", "o1", at(T0 + 17 * MINUTE))]),
        ([FAILED], [("payment_stall", "o1", at(T0 + 11 * MINUTE))]),
        ([SUCCESS], []),
        ([PAID, CASHIER], []),
    ],
    ids=[
        "abandon",
        "submitted",
        "ordered",
        "ordered-no-id",
        "paid",
        "cancelled",
        "cashier",
        "cashier-success",
        "failed-fast",
        "failed-unknown-reason",
        "orphan-cashier",
        "orphan-failure",
        "orphan-success",
        "paid-then-cashier",
    ],
)
def test_stall_patterns(events: list[dict[str, Any]], expected: list[tuple]) -> None:
    c = core(CoreConfig(lateness_ms=0))
    assert fired(c, events, until=T0 + 3 * HOUR) == expected


def test_payment_stall_fires_once_per_silence_and_rearms_on_a_new_visit() -> None:
    ev, c = EventMaker(), core(CoreConfig(lateness_ms=0))
    first = ev("cashier_enter", "bo", T0, order_id="o9")
    again = ev("cashier_enter", "bo", T0 + HOUR, order_id="o9")
    assert fired(c, [first], until=T0 + 50 * MINUTE) == [
        ("payment_stall", "o9", at(T0 + 10 * MINUTE))
    ]
    assert fired(c, [again], until=T0 + 2 * HOUR) == [("payment_stall", "o9", at(T0 + 70 * MINUTE))]


def test_unpaid_order_already_inside_the_lead_fires_at_once() -> None:
    ev, c = EventMaker(), core(CoreConfig(lateness_ms=0))
    order = ev(
        "order_created",
        "cy",
        T0,
        order_id="o2",
        items=[ITEM],
        amount=10.0,
        pay_deadline=T0 + 5 * MINUTE,
    )
    assert fired(c, [order], until=T0 + SECOND) == [("unpaid_order", "o2", at(T0))]


def test_cancel_request_is_an_immediate_fact_with_the_order() -> None:
    ev, c = EventMaker(), core(CoreConfig(lateness_ms=HOUR))  # nothing applied yet
    order = ev(
        "order_created",
        "dee",
        T0,
        order_id="o3",
        items=[ITEM],
        amount=500.0,
        pay_deadline=T0 + DAY,
        segment="vip",
    )
    cancel = ev(
        "order_cancel_requested", "dee", T0 + 2 * MINUTE, order_id="o3", reason="found_cheaper"
    )
    out = c.step([rec(order), rec(cancel)], now_ms=None)
    assert [f.pattern for f in out.facts] == ["cancel_request"]
    fact = out.facts[0].fields
    assert fact["amount"] == 500.0
    assert fact["reason"] == "found_cheaper"
    assert fact["order_age_ms"] == 2 * MINUTE
    assert fact["segment"] == "vip"
    assert fact["category"] == "electronics.smartphone"
    assert out.commands[0]["intervention"]["type"] == "retention_offer"
    # while the shopper asks to leave, no unpaid-order reminder follows
    assert fired(c, [], until=T0 + 2 * DAY) == []


def test_cancel_request_for_an_unknown_order_still_yields_a_fact() -> None:
    ev, c = EventMaker(), core()
    out = c.step([rec(ev("order_cancel_requested", "eve", T0, order_id="ghost"))], now_ms=None)
    assert [f.fields["order_id"] for f in out.facts] == ["ghost"]
    assert out.facts[0].fields["amount"] is None
    assert out.commands == []  # the rule for unknown orders runs in shadow mode
    assert out.decisions == [("cancel_request", "cancel_request.unknown_order", "shadow")]


@pytest.mark.parametrize(
    ("categories", "missing"),
    [
        (["electronics.smartphone"], ["electronics.accessories", "electronics.audio"]),
        (["electronics.smartphone", "electronics.accessories.case"], ["electronics.audio"]),
        (["electronics.smartphone", "electronics.accessories", "electronics.audio"], None),
        (["garden.hose"], None),
        (["books.fiction"], ["books.bookmarks"]),
    ],
)
def test_cross_sell_lists_missing_companions(
    categories: list[str], missing: list[str] | None
) -> None:
    ev, c = EventMaker(), core()
    items = [{"sku": f"s{i}", "category": cat, "price": 1.0} for i, cat in enumerate(categories)]
    out = c.step([rec(ev("checkout_start", "fox", T0, checkout_id="c7", items=items))], now_ms=None)
    found = [f.fields["missing_categories"] for f in out.facts if f.pattern == "cross_sell"]
    assert found == ([missing] if missing else [])


def test_duplicates_are_ignored_even_when_late() -> None:
    ev, c = EventMaker(), core(CoreConfig(lateness_ms=0))
    add = ev.add("gil", T0)
    first = c.step([rec(add), rec(add)], now_ms=None)
    assert first.duplicates == 1
    c.step([rec(ev("cart_view", "clock", T0 + 5 * MINUTE))], now_ms=None)
    again = c.step([rec(add)], now_ms=None)  # its time is now behind the watermark
    assert (again.duplicates, again.dead_letters) == (1, [])
    stalls = fired(c, [], until=T0 + HOUR)
    assert stalls == [("cart_stall", "sku-1", at(T0 + 10 * MINUTE))]


def test_facts_carry_what_decisions_need() -> None:
    ev, c = EventMaker(), core(CoreConfig(lateness_ms=0))
    events = [
        ev.add("hal", T0, sku="a", price=2.0, qty=3, segment="new", timezone="Asia/Shanghai"),
        ev("cashier_enter", "hal", T0, order_id="o5", amount=12.0, method="alipay"),
        ev("payment_failed", "hal", T0 + MINUTE, order_id="o5", reason="card_declined"),
    ]
    out = c.step([rec(e) for e in events] + [rec(ev("cart_view", "clock", T0 + HOUR))], now_ms=None)
    facts = {f.pattern: f.fields for f in out.facts}
    pay = facts["payment_stall"]
    assert (pay["amount"], pay["method"], pay["failure_reason"], pay["payment_failures"]) == (
        12.0,
        "alipay",
        "card_declined",
        1,
    )
    assert pay["dwell_ms"] == 4 * MINUTE  # card_declined waits 3m after the failure at +1m
    assert (pay["segment"], pay["timezone"], pay["cart_value"]) == ("new", "Asia/Shanghai", 6.0)
    cart = facts["cart_stall"]
    assert cart["prior_stalls"] == 1  # the payment stall fired first
    assert cart["dwell_ms"] == 10 * MINUTE


def test_state_expires_after_the_horizon_and_memory_stays_flat() -> None:
    ev, c = EventMaker(), core(CoreConfig(lateness_ms=0, horizon_ms=DAY))
    for day in range(10):
        t = T0 + day * DAY
        batch = [ev.add(f"d{day}-u{i}", t + i, sku=f"s{i}") for i in range(200)]
        batch += [
            ev(
                "order_created",
                f"d{day}-u{i}",
                t + i,
                order_id=f"o{day}-{i}",
                items=[{"sku": "x"}],
                amount=5.0,
                pay_deadline=t + HOUR,
            )
            for i in range(50)
        ]
        c.step([rec(e) for e in batch], now_ms=None)
        c.delivered()
        c.take_dirty()
        assert len(c.journeys) <= 400, (day, len(c.journeys))
    c.step([rec(ev("cart_view", "clock", T0 + 12 * DAY))], now_ms=None)
    c.delivered()
    c.take_dirty()
    assert set(c.journeys) <= {"clock"}


def test_facts_count_recent_views_and_prior_interventions() -> None:
    ev, c = EventMaker(), core(CoreConfig(lateness_ms=0))
    events = [
        ev("detail_view", "ivy", T0 - 2 * DAY, sku="a"),  # too old to count
        ev("detail_view", "ivy", T0 - HOUR, sku="a"),
        ev("cart_view", "ivy", T0 - MINUTE),
        ev.add("ivy", T0, sku="a", category="books", price=20.0),
        ev.add("ivy", T0 + 7 * HOUR, sku="b", category="books", price=20.0),
    ]
    out = c.step(
        [rec(e) for e in events] + [rec(ev("cart_view", "clock", T0 + 20 * HOUR))], now_ms=None
    )
    first, second = (f.fields for f in out.facts if f.pattern == "cart_stall")
    assert first["views_24h"] == 2
    assert (first["prior_interventions"], second["prior_interventions"]) == (0, 1)
