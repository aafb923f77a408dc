"""Attribution: each decision that reached an arm is watched for the conversion its
pattern aims at, within its window, and closed with one record on the outcomes topic.

Driven through the batch step on the shipped rules, in event time only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
import pytest

from stream.decide.rulebook import load_rulebook
from stream.domain.attribution import new_watch, on_paid, on_window_end, satisfied_by_paid
from stream.domain.engine import CoreConfig, PartitionCore, StepOutput
from stream.domain.guardrails import Guardrails, Holdout
from stream.domain.timeutil import DAY, HOUR, MINUTE
from tests.helpers import RULES, T0, EventMaker, core, rec

BOOK = load_rulebook(RULES)
Event = dict[str, Any]


def guards(**changes: Any) -> Guardrails:
    """The shipped guardrails, nobody held out unless asked, changed as given."""
    changes.setdefault("default_holdout", Holdout(0.0))
    return replace(BOOK.guardrails, **changes)


class Sim:
    """A partition core on the shipped rules, fed events in event-time order."""

    def __init__(self, guardrails: Guardrails | None = None, lateness_ms: int = 0) -> None:
        self.core = core(CoreConfig(lateness_ms=lateness_ms), RULES, guardrails or guards())
        self.ev = EventMaker()
        self.commands: list[dict[str, Any]] = []
        self.outcomes: list[dict[str, Any]] = []

    def feed(self, *events: Event) -> StepOutput:
        out = self.core.step([rec(e) for e in events], now_ms=None)
        self.commands.extend(out.commands)
        self.outcomes.extend(out.outcomes)
        return out

    def until(self, ts: int) -> StepOutput:
        """Move the watermark to ``ts``: whatever is due before it happens."""
        return self.feed(self.ev("cart_view", "clock", ts))

    def decisions(self) -> list[dict[str, Any]]:
        return [o for o in self.outcomes if o["kind"] == "decision"]

    def attributions(self) -> list[dict[str, Any]]:
        return [o for o in self.outcomes if o["kind"] == "attribution"]


def item(sku: str, category: str, price: float, qty: int = 1) -> dict[str, Any]:
    return {"sku": sku, "category": category, "price": price, "qty": qty}


MILK = item("milk", "fresh_food", 6.0, 2)
BREAD = item("bread", "fresh_food", 3.0)
RAKE = item("rake", "garden", 20.0)
PHONE = item("phone", "electronics.smartphone", 300.0)
EARBUDS = item("earbuds", "electronics.audio.earbuds", 40.0)


def order(
    ev: EventMaker,
    ts: int,
    order_id: str,
    items: list[dict[str, Any]],
    amount: float,
    pay_deadline: int | None = None,
    **extra: Any,
) -> Event:
    """An order created by ann; its pay deadline (default: 2 hours on) arms the unpaid
    reminder 15 minutes before it."""
    return ev(
        "order_created",
        "ann",
        ts,
        order_id=order_id,
        items=items,
        amount=amount,
        pay_deadline=pay_deadline or ts + 2 * HOUR,
        **extra,
    )


def paid(ev: EventMaker, ts: int, order_id: str) -> Event:
    return ev("order_paid", "ann", ts, order_id=order_id)


def cart_paid(ev: EventMaker) -> list[Event]:
    return [
        ev.add("ann", T0, sku="milk", category="fresh_food", price=6.0, qty=2),  # stall 0:10
        order(ev, T0 + 20 * MINUTE, "o1", [MILK, BREAD], 15.0),
        paid(ev, T0 + 30 * MINUTE, "o1"),
    ]


def cart_other_sku(ev: EventMaker) -> list[Event]:
    return [
        ev.add("ann", T0, sku="milk", category="fresh_food", price=6.0, qty=2),
        order(ev, T0 + 20 * MINUTE, "o1", [BREAD], 3.0),
        paid(ev, T0 + 30 * MINUTE, "o1"),
    ]


def checkout(ev: EventMaker, items: list[dict[str, Any]], cid: str = "c1") -> Event:
    return ev("checkout_start", "ann", T0, checkout_id=cid, items=items)  # abandoned at 0:20


def checkout_by_id(ev: EventMaker) -> list[Event]:
    return [
        checkout(ev, [RAKE]),
        order(ev, T0 + 30 * MINUTE, "o1", [RAKE], 20.0, checkout_id="c1"),
        paid(ev, T0 + 40 * MINUTE, "o1"),
    ]


def checkout_by_items(ev: EventMaker) -> list[Event]:
    return [
        checkout(ev, [RAKE]),
        order(ev, T0 + 30 * MINUTE, "o1", [RAKE, BREAD], 23.0),
        paid(ev, T0 + 40 * MINUTE, "o1"),
    ]


def checkout_other_checkout(ev: EventMaker) -> list[Event]:
    return [
        checkout(ev, [RAKE]),
        order(ev, T0 + 30 * MINUTE, "o1", [RAKE], 20.0, checkout_id="c2"),
        paid(ev, T0 + 40 * MINUTE, "o1"),
    ]


def payment_paid(ev: EventMaker) -> list[Event]:
    return [
        ev("cashier_enter", "ann", T0, order_id="o1", amount=50.0),  # stall at 0:10
        ev("payment_success", "ann", T0 + 15 * MINUTE, order_id="o1"),
    ]


def payment_cancelled(ev: EventMaker) -> list[Event]:
    return [
        ev("cashier_enter", "ann", T0, order_id="o1", amount=50.0),
        ev("order_cancelled", "ann", T0 + 15 * MINUTE, order_id="o1"),
    ]


def unpaid_paid(ev: EventMaker) -> list[Event]:
    return [
        order(ev, T0, "o1", [RAKE], 80.0),  # unpaid reminder at 1:45
        paid(ev, T0 + 110 * MINUTE, "o1"),
    ]


def cross_sell(ev: EventMaker, bought: list[dict[str, Any]], amount: float) -> list[Event]:
    return [
        checkout(ev, [PHONE]),  # cross_sell at once: accessories and audio are missing
        ev("checkout_submit", "ann", T0 + MINUTE, checkout_id="c1"),
        order(ev, T0 + 2 * MINUTE, "o1", bought, amount, pay_deadline=T0 + 2 * DAY),
        paid(ev, T0 + 3 * MINUTE, "o1"),
    ]


def cancel(ev: EventMaker, cancelled: bool) -> list[Event]:
    events = [
        order(ev, T0, "o1", [RAKE], 150.0),
        ev("order_cancel_requested", "ann", T0 + 5 * MINUTE, order_id="o1"),  # retention offer
    ]
    if cancelled:
        events.append(ev("order_cancelled", "ann", T0 + HOUR, order_id="o1"))
    return events


CANCEL_UNTIL = T0 + 5 * MINUTE + 48 * HOUR  # cancel_request's window is 48h


@pytest.mark.parametrize(
    ("story", "pattern", "result", "order_id", "gmv", "at_ms"),
    [
        (cart_paid, "cart_stall", "converted", "o1", 15.0, T0 + 30 * MINUTE),
        (cart_other_sku, "cart_stall", "lost", None, 0.0, T0 + 10 * MINUTE + DAY),
        (checkout_by_id, "checkout_abandon", "converted", "o1", 20.0, T0 + 40 * MINUTE),
        (checkout_by_items, "checkout_abandon", "converted", "o1", 23.0, T0 + 40 * MINUTE),
        (checkout_other_checkout, "checkout_abandon", "lost", None, 0.0, T0 + 20 * MINUTE + DAY),
        (payment_paid, "payment_stall", "converted", "o1", 50.0, T0 + 15 * MINUTE),
        (payment_cancelled, "payment_stall", "lost", "o1", 0.0, T0 + 15 * MINUTE),
        (unpaid_paid, "unpaid_order", "converted", "o1", 80.0, T0 + 110 * MINUTE),
        (
            lambda ev: cross_sell(ev, [PHONE, EARBUDS], 340.0),
            "cross_sell",
            "converted",
            "o1",
            340.0,
            T0 + 3 * MINUTE,
        ),
        (
            lambda ev: cross_sell(ev, [PHONE], 300.0),
            "cross_sell",
            "lost",
            None,
            0.0,
            T0 + 6 * HOUR,  # cross_sell's window is 6h
        ),
        (lambda ev: cancel(ev, False), "cancel_request", "converted", "o1", 150.0, CANCEL_UNTIL),
        (lambda ev: cancel(ev, True), "cancel_request", "lost", "o1", 0.0, T0 + HOUR),
    ],
    ids=[
        "cart_stall_sku_paid",
        "cart_stall_other_sku",
        "checkout_abandon_its_order",
        "checkout_abandon_its_items",
        "checkout_abandon_another_checkout",
        "payment_stall_paid",
        "payment_stall_cancelled",
        "unpaid_order_paid",
        "cross_sell_companion_paid",
        "cross_sell_no_companion",
        "cancel_request_kept",
        "cancel_request_cancelled",
    ],
)
def test_each_pattern_is_credited_for_its_own_aim(
    story: Callable[[EventMaker], list[Event]],
    pattern: str,
    result: str,
    order_id: str | None,
    gmv: float,
    at_ms: int,
) -> None:
    sim = Sim(guards(caps=(), stacking=False))
    sim.feed(*story(sim.ev))
    sim.until(T0 + 3 * DAY)
    [decision] = [d for d in sim.decisions() if d["pattern"] == pattern]
    assert decision["arm"] == "treatment"
    [record] = [a for a in sim.attributions() if a["id"] == decision["id"]]
    assert record == {
        "kind": "attribution",
        "id": decision["id"],
        "user_id": "ann",
        "pattern": pattern,
        "rule": decision["rule"],
        "arm": "treatment",
        "result": result,
        "gmv": gmv,
        "at_ms": at_ms,
        "at": record["at"],
        "decided_at_ms": decision["at_ms"],
        "order_id": order_id,
        "credited_to": None,
    }
    assert sim.core.journeys["ann"].watches == []  # every watch closes exactly once
    assert len(sim.attributions()) == len(sim.decisions())


@pytest.mark.parametrize(
    ("story", "decided_at", "window", "offset", "result"),
    [
        (payment_paid, T0 + 10 * MINUTE, DAY, -1, "converted"),
        (payment_paid, T0 + 10 * MINUTE, DAY, 0, "lost"),
        (lambda ev: cross_sell(ev, [PHONE, EARBUDS], 340.0), T0, 6 * HOUR, -1, "converted"),
        (lambda ev: cross_sell(ev, [PHONE, EARBUDS], 340.0), T0, 6 * HOUR, 0, "lost"),
    ],
    ids=["24h_just_before", "24h_at_the_end", "6h_just_before", "6h_at_the_end"],
)
def test_a_window_is_half_open_paid_at_its_end_is_too_late(
    story: Callable[[EventMaker], list[Event]],
    decided_at: int,
    window: int,
    offset: int,
    result: str,
) -> None:
    sim = Sim(guards(caps=(), stacking=False))
    events = story(sim.ev)
    pay_at = decided_at + window + offset
    events[-1] = {**events[-1], "ts": pay_at}  # pay at the edge instead
    sim.feed(*events)
    sim.until(pay_at + 1)
    [decision] = sim.decisions()
    [record] = sim.attributions()
    assert record["id"] == decision["id"]
    assert record["decided_at_ms"] == decided_at
    assert record["result"] == result
    assert record["at_ms"] == pay_at
    assert record["order_id"] == ("o1" if result == "converted" else None)


def test_one_paid_order_credits_only_the_latest_decision_it_satisfies_once() -> None:
    sim = Sim(guards(caps=()))
    ev = sim.ev
    sim.feed(
        order(ev, T0, "o1", [RAKE, EARBUDS], 80.0, pay_deadline=T0 + HOUR),  # unpaid at 0:45
        ev("cashier_enter", "ann", T0 + 46 * MINUTE, order_id="o1"),  # payment stall at 0:56
        ev("payment_success", "ann", T0 + 58 * MINUTE, order_id="o1"),
        # a cross-sell the paid order would satisfy (it holds audio), decided after it was paid
        ev("checkout_start", "ann", T0 + 58 * MINUTE + 30_000, checkout_id="c9", items=[PHONE]),
        paid(ev, T0 + 59 * MINUTE, "o1"),  # the same order reported paid again
    )
    sim.until(T0 + 3 * DAY)
    unpaid, stall, cross, _abandon = sim.decisions()
    assert [d["pattern"] for d in (unpaid, stall, cross)] == [
        "unpaid_order",
        "payment_stall",
        "cross_sell",
    ]
    by_order = [a for a in sim.attributions() if a["order_id"] == "o1"]
    assert [(a["id"], a["result"], a["gmv"], a["credited_to"]) for a in by_order] == [
        (stall["id"], "converted", 80.0, None),
        (unpaid["id"], "lost", 0.0, stall["id"]),
    ]
    assert {a["at_ms"] for a in by_order} == {T0 + 58 * MINUTE}
    [late] = [a for a in sim.attributions() if a["id"] == cross["id"]]
    assert (late["result"], late["order_id"]) == ("lost", None)  # its window ran out


def test_two_stalled_items_in_one_paid_order_credit_the_later_stall() -> None:
    sim = Sim(guards(caps=(), stacking=False))
    ev = sim.ev
    sim.feed(
        ev.add("ann", T0, sku="milk", category="fresh_food", price=6.0, qty=2),  # 0:10
        ev.add("ann", T0 + 5 * MINUTE, sku="bread", category="fresh_food", price=8.0),  # 0:15
        order(ev, T0 + 20 * MINUTE, "o1", [MILK, BREAD], 20.0),
        paid(ev, T0 + 30 * MINUTE, "o1"),
    )
    sim.until(T0 + 3 * DAY)
    milk, bread = sim.decisions()
    assert [(a["id"], a["result"], a["credited_to"]) for a in sim.attributions()] == [
        (bread["id"], "converted", None),
        (milk["id"], "lost", bread["id"]),
    ]


def test_the_control_arm_is_attributed_like_the_treated_one() -> None:
    sim = Sim(guards(default_holdout=Holdout(1.0)))
    sim.feed(*payment_paid(sim.ev))
    sim.until(T0 + 3 * DAY)
    [decision] = sim.decisions()
    assert (decision["arm"], decision["reason"]) == ("control", "holdout")
    assert sim.commands == []
    [record] = sim.attributions()
    assert (record["id"], record["arm"], record["result"], record["gmv"]) == (
        decision["id"],
        "control",
        "converted",
        50.0,
    )


def test_suppressed_decisions_are_not_watched() -> None:
    sim = Sim(guards(min_intent=0.99))
    sim.feed(*payment_paid(sim.ev))
    sim.until(T0 + 3 * DAY)
    assert [d["reason"] for d in sim.decisions()] == ["low_intent"]
    assert sim.attributions() == []


def shoppers(ev: EventMaker) -> list[Event]:
    """Several shoppers and every pattern, interleaved, in event time."""
    events: list[Event] = []
    for n, user in enumerate(("amy", "ben", "cal", "dee")):
        t = T0 + n * MINUTE
        events += [
            ev.add(user, t, sku="milk", category="fresh_food", price=6.0, qty=2),
            ev.add(user, t + MINUTE, sku="novel", category="books", price=12.0),
            ev("checkout_start", user, t + 2 * MINUTE, checkout_id=f"{user}-c", items=[PHONE]),
            ev("cashier_enter", user, t + 3 * MINUTE, order_id=f"{user}-pay", amount=30.0),
            ev(
                "order_created",
                user,
                t + 4 * MINUTE,
                order_id=f"{user}-o",
                checkout_id=f"{user}-app",
                items=[BREAD, EARBUDS],
                amount=43.0,
                pay_deadline=t + HOUR,
            ),
            ev(
                "order_created",
                user,
                t + 5 * MINUTE,
                order_id=f"{user}-keep",
                checkout_id=f"{user}-web",
                items=[RAKE],
                amount=120.0,
                pay_deadline=t + 3 * HOUR,
            ),
            ev("order_cancel_requested", user, t + 6 * MINUTE, order_id=f"{user}-keep"),
        ]
        if n % 2:
            events.append(ev("order_paid", user, t + 50 * MINUTE, order_id=f"{user}-o"))
            events.append(ev("payment_success", user, t + 55 * MINUTE, order_id=f"{user}-pay"))
            events.append(ev("order_cancelled", user, t + 2 * HOUR, order_id=f"{user}-keep"))
    events.sort(key=lambda e: e["ts"])
    events.append(ev("cart_view", "clock", T0 + 4 * DAY))
    return events


#: the shipped guardrails, with caps loose enough for every pattern of the story
STORY_GUARDS = guards(default_holdout=Holdout(0.25), caps=())


def replay(events: list[Event], size: int, lateness_ms: int = 0) -> tuple[bytes, bytes]:
    c: PartitionCore = core(CoreConfig(lateness_ms=lateness_ms), RULES, STORY_GUARDS)
    commands: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    for start in range(0, len(events), size):
        out = c.step([rec(e) for e in events[start : start + size]], now_ms=None)
        commands += out.commands
        outcomes += out.outcomes
    return orjson.dumps(commands), orjson.dumps(outcomes)


def test_outcome_records_are_byte_identical_whatever_the_batching() -> None:
    events = shoppers(EventMaker())
    whole = replay(events, len(events))
    outcomes = orjson.loads(whole[1])
    kinds = {(o["kind"], o["pattern"], o["result"]) for o in outcomes}
    # the story covers every pattern and both ends of attribution
    assert {p for k, p, _ in kinds if k == "attribution"} >= {
        "cart_stall",
        "checkout_abandon",
        "payment_stall",
        "unpaid_order",
        "cross_sell",
        "cancel_request",
    }
    assert {r for k, _, r in kinds if k == "attribution"} == {"converted", "lost"}
    for size in (1, 3, 7):
        assert replay(events, size) == whole


def test_outcome_records_survive_a_restart_in_the_middle() -> None:
    events = shoppers(EventMaker())
    whole = orjson.loads(replay(events, len(events))[1])
    half = len(events) // 2
    first = core(CoreConfig(lateness_ms=0), RULES, STORY_GUARDS)
    before = first.step([rec(e) for e in events[:half]], now_ms=None).outcomes
    snapshots = [(u, raw) for u, raw in first.take_dirty() if raw is not None]
    watermark = first.take_watermark()
    assert watermark is not None
    second = core(CoreConfig(lateness_ms=0), RULES, STORY_GUARDS)
    second.restore(snapshots)
    second.restore_watermark(watermark, None)
    second.delivered()
    after = second.step([rec(e) for e in events[half:]], now_ms=None).outcomes
    assert orjson.dumps(before + after) == orjson.dumps(whole)


# -- the attribution primitives ------------------------------------------------------------


@pytest.mark.parametrize(
    ("categories", "hit"),
    [
        (["electronics.audio"], True),
        (["electronics.audio.earbuds"], True),  # a sub-category counts
        (["electronics.audiophile"], False),  # a prefix of the name is not a sub-category
        (["electronics"], False),  # the parent is not the companion
        (["garden", "electronics.accessories"], True),
    ],
)
def test_cross_sell_is_satisfied_by_a_missing_category_or_its_sub_category(
    categories: list[str], hit: bool
) -> None:
    fields = {"missing_categories": ["electronics.accessories", "electronics.audio"]}
    watch = new_watch("d1", "cross_sell", "r", "treatment", T0, HOUR, fields, "c1")
    assert satisfied_by_paid(watch, "o1", ["x"], categories, None) is hit


def test_equal_decision_times_credit_deterministically() -> None:
    watches = [
        new_watch(d, "cart_stall", "r", "treatment", T0, HOUR, {"price": 1.0}, "milk")
        for d in ("b", "a", "c")
    ]
    records = on_paid("ann", watches, T0 + 1, "o1", ["milk"], [], None, 9.0)
    assert [(r["id"], r["result"], r["credited_to"]) for r in records] == [
        ("c", "converted", None),
        ("a", "lost", "c"),
        ("b", "lost", "c"),
    ]
    assert watches == []


@pytest.mark.parametrize(("offset", "credited"), [(-1, True), (0, False)])
def test_a_payment_at_the_end_of_the_window_is_outside_it(offset: int, credited: bool) -> None:
    watch = new_watch("d1", "payment_stall", "r", "treatment", T0, HOUR, {"amount": 5.0}, "o1")
    records = on_paid("ann", [watch], T0 + HOUR + offset, "o1", [], [], None, 5.0)
    assert [r["result"] for r in records] == (["converted"] if credited else [])


def test_a_retention_offer_kept_without_a_known_amount_converts_with_no_gmv() -> None:
    watch = new_watch("d1", "cancel_request", "r", "control", T0, HOUR, {"amount": None}, "o1")
    record = on_window_end("ann", watch)
    assert (record["result"], record["gmv"], record["order_id"], record["at_ms"]) == (
        "converted",
        0.0,
        "o1",
        T0 + HOUR,
    )
