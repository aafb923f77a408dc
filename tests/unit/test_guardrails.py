"""Guardrails: the primitives, then each guardrail's verdict through the batch step.

Every scenario runs the shipped rules (or a small edit of them) on a real
partition core, in event time only, and reads the verdict from the outcomes
record of the decision: ``result`` (emitted, deferred, suppressed), ``reason`` and
``arm``.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.decide.rulebook import load_rulebook
from stream.domain.budget import Bucket
from stream.domain.engine import CoreConfig, StepOutput
from stream.domain.guardrails import (
    HOUR_MS,
    Cap,
    Guardrails,
    Holdout,
    QuietHours,
    capped,
    in_holdout,
    stacked,
)
from stream.domain.timeutil import DAY, HOUR, MINUTE, SECOND
from stream.errors import RuleFileError
from tests.helpers import RULES, T0, EventMaker, core, rec


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_holdout_is_deterministic_and_close_to_its_share() -> None:
    users = [f"user-{i}" for i in range(20_000)]
    held = [u for u in users if in_holdout(u, "rules-v1", 0.10)]
    assert 0.09 < len(held) / len(users) < 0.11
    assert held == [u for u in users if in_holdout(u, "rules-v1", 0.10)]
    other_salt = {u for u in users if in_holdout(u, "rules-v2", 0.10)}
    assert 0.05 < len(other_salt & set(held)) / len(held) < 0.15  # a new salt reshuffles
    assert not any(in_holdout(u, "s", 0.0) for u in users[:100])


@pytest.mark.parametrize(
    ("at", "timezone", "release"),
    [
        ("2026-11-25T23:30:00+00:00", "UTC", "2026-11-26T08:00:00+00:00"),
        ("2026-11-25T03:00:00+00:00", "UTC", "2026-11-25T08:00:00+00:00"),
        ("2026-11-25T12:00:00+00:00", "UTC", None),
        # 15:00 UTC is 23:00 in Shanghai: quiet until 08:00 local = 00:00 UTC
        ("2026-11-25T15:00:00+00:00", "Asia/Shanghai", "2026-11-26T00:00:00+00:00"),
        ("2026-11-25T15:00:00+00:00", "Not/AZone", None),  # unknown zone: the default (UTC)
    ],
)
def test_quiet_hours_defer_to_the_end_of_the_window(
    at: str, timezone: str, release: str | None
) -> None:
    quiet = QuietHours(22, 8)
    got = quiet.release_ms(ms(at), timezone)
    assert got == (ms(release) if release else None)


def test_quiet_hours_within_one_day() -> None:
    quiet = QuietHours(12, 14)
    assert quiet.release_ms(ms("2026-11-25T13:10:00+00:00"), None) == ms(
        "2026-11-25T14:00:00+00:00"
    )
    assert quiet.release_ms(ms("2026-11-25T14:00:00+00:00"), None) is None


def test_caps_count_interventions_in_a_rolling_window_of_event_time() -> None:
    caps = [
        Cap(limit=1, window_ms=24 * HOUR_MS, pattern="cart_stall"),
        Cap(limit=3, window_ms=7 * 24 * HOUR_MS),
    ]
    t = ms("2026-11-25T12:00:00+00:00")
    history = [(t - 30 * HOUR_MS, "cart_stall"), (t - 2 * HOUR_MS, "payment_stall")]
    assert capped(history, "cart_stall", t, caps) is None  # the cart stall was 30 h ago
    history.append((t - HOUR_MS, "cart_stall"))
    assert capped(history, "cart_stall", t, caps) == caps[0]
    assert capped(history, "unpaid_order", t, caps) == caps[1]  # 3 in the last 7 days
    assert capped(history, "unpaid_order", t + 8 * 24 * HOUR_MS, caps) is None


def test_no_stacking_while_an_offer_for_the_same_order_is_active() -> None:
    t = ms("2026-11-25T12:00:00+00:00")
    active = [("order:o1", t + HOUR_MS), ("journey", t - 1)]
    assert stacked(active, "order:o1", t)
    assert not stacked(active, "order:o1", t + HOUR_MS)  # expired
    assert not stacked(active, "journey", t)
    assert not stacked(active, "order:o2", t)


# -- through the core: each guardrail's verdict on the outcomes record ---------------------

BOOK = load_rulebook(RULES)


def guards(base: Guardrails | None = None, **changes: Any) -> Guardrails:
    """The shipped guardrails (or ``base``) with nobody held out unless asked, changed."""
    changes.setdefault("default_holdout", Holdout(0.0))
    return replace(base or BOOK.guardrails, **changes)


class Sim:
    """A partition core on real rules, fed events in event-time order (no lateness, no
    wall clock), remembering every command and outcome record."""

    def __init__(self, guardrails: Guardrails, rules: Path = RULES, lateness_ms: int = 0) -> None:
        self.lateness_ms = lateness_ms
        self.core = core(CoreConfig(lateness_ms=lateness_ms), rules, guardrails)
        self.ev = EventMaker()
        self.commands: list[dict[str, Any]] = []
        self.outcomes: list[dict[str, Any]] = []

    def feed(self, *events: dict[str, Any]) -> StepOutput:
        out = self.core.step([rec(e) for e in events], now_ms=None)
        self.commands.extend(out.commands)
        self.outcomes.extend(out.outcomes)
        return out

    def until(self, ts: int) -> StepOutput:
        """Move the watermark to ``ts``: whatever is due before it happens."""
        return self.feed(self.ev("cart_view", "clock", ts + self.lateness_ms))

    def decisions(self, pattern: str | None = None) -> list[dict[str, Any]]:
        return [
            o for o in self.outcomes if o["kind"] == "decision" and pattern in (None, o["pattern"])
        ]

    def verdicts(self, pattern: str | None = None) -> list[str]:
        """Each decision's suppression reason, or its result."""
        return [d["reason"] or d["result"] for d in self.decisions(pattern)]

    def milk(self, user: str, ts: int, sku: str = "milk", **fields: Any) -> dict[str, Any]:
        """A fresh-food add: stalls 10 minutes later; its rule is a 2 USD push coupon
        (ttl 2h, bucket fresh_food)."""
        return self.ev.add(user, ts, sku=sku, category="fresh_food", price=6.0, qty=2, **fields)

    def book(self, user: str, ts: int, sku: str = "novel") -> dict[str, Any]:
        """A books add: stalls 6 hours later; its rule is a free in-app reminder."""
        return self.ev.add(user, ts, sku=sku, category="books", price=10.0)

    def declined(self, user: str, ts: int, order: str) -> dict[str, Any]:
        """A declined card: the payment stalls 3 minutes later; its rule is a 3 USD push
        coupon on the order (ttl 2h, bucket payments)."""
        return self.ev("payment_failed", user, ts, order_id=order, reason="card_declined")

    def order(self, user: str, ts: int, order: str, amount: float, deadline: int) -> dict[str, Any]:
        items = [{"sku": f"{order}-item", "category": "garden", "price": amount}]
        return self.ev(
            "order_created",
            user,
            ts,
            order_id=order,
            amount=amount,
            pay_deadline=deadline,
            items=items,
        )


STALL = T0 + 10 * MINUTE  # a milk add at T0 stalls at 16:10 UTC
NIGHT = T0 + 6 * HOUR  # 22:00 UTC
MORNING = T0 + 16 * HOUR  # 08:00 UTC the next day
TOKYO_RELEASE = T0 + 7 * HOUR  # 16:10 UTC is 01:10 in Tokyo; quiet until 08:00 = 23:00 UTC
SPENT = {"fresh_food": Bucket("fresh_food", {"USD": 1.0})}  # less than one 2 USD coupon


@pytest.mark.parametrize(
    ("changes", "result", "reason", "arm", "release"),
    [
        ({}, "emitted", None, "treatment", None),
        ({"min_intent": 0.99}, "suppressed", "low_intent", None, None),
        ({"caps": (Cap(limit=0, window_ms=DAY),)}, "suppressed", "cap", None, None),
        (
            {"default_timezone": "Asia/Tokyo", "max_defer_ms": HOUR},
            "suppressed",
            "quiet_hours",
            None,
            None,
        ),
        ({"default_timezone": "Asia/Tokyo"}, "deferred", None, "treatment", TOKYO_RELEASE),
        ({"buckets": SPENT}, "suppressed", "budget", None, None),
        ({"default_holdout": Holdout(1.0)}, "suppressed", "holdout", "control", None),
    ],
    ids=["emitted", "low_intent", "cap", "quiet_hours", "deferred", "budget", "holdout"],
)
def test_each_guardrail_records_its_verdict_on_the_outcomes_record(
    changes: dict[str, Any], result: str, reason: str | None, arm: str | None, release: int | None
) -> None:
    sim = Sim(guards(**changes))
    sim.feed(sim.milk("ann", T0))
    out = sim.until(STALL + 1)
    [record] = sim.decisions()
    assert record["rule"] == "cart_stall.fresh_food.coupon"
    assert (record["result"], record["reason"], record["arm"]) == (result, reason, arm)
    assert record["release_at_ms"] == release
    assert (record["bucket"], record["cost"], record["unit"]) == ("fresh_food", 2.0, "USD")
    assert out.decisions == [("cart_stall", "cart_stall.fresh_food.coupon", reason or result)]
    sent = [c["intervention_id"] for c in out.commands]
    assert sent == ([record["id"]] if result == "emitted" else [])
    journey = sim.core.journeys["ann"]
    # Only a decision that reached an arm counts for caps and stacking and is watched.
    assert len(journey.sent) == len(journey.watches) == (1 if arm else 0)
    # Only treatment spends.
    assert journey.charges == (
        [["fresh_food", "USD", journey.charges[0][2], 2.0]] if arm == "treatment" else []
    )


#: a setting of each guardrail that holds the milk coupon back, in the order of the checks
HOLDING: list[tuple[str, dict[str, Any]]] = [
    ("low_intent", {"min_intent": 0.99}),
    ("cap", {"caps": (Cap(0, DAY),)}),
    ("quiet_hours", {"default_timezone": "Asia/Tokyo", "max_defer_ms": HOUR}),
    ("budget", {"buckets": SPENT}),
    ("holdout", {"default_holdout": Holdout(1.0)}),
]


@pytest.mark.parametrize("first", range(len(HOLDING)), ids=[name for name, _ in HOLDING])
def test_when_several_guardrails_hold_the_first_in_order_is_the_reason(first: int) -> None:
    changes = {key: value for _, setting in HOLDING[first:] for key, value in setting.items()}
    sim = Sim(guards(**changes))
    sim.feed(sim.milk("ann", T0))
    sim.until(STALL + 1)
    assert sim.verdicts() == [HOLDING[first][0]]


ONE_COUPON = {"fresh_food": Bucket("fresh_food", {"USD": 2.0})}


@pytest.mark.parametrize(
    ("changes", "second"),
    [
        ({"caps": (Cap(1, DAY),)}, "cap"),
        ({"caps": ()}, "stacking"),
        ({"caps": (), "stacking": False}, "quiet_hours"),
        ({"caps": (), "stacking": False, "max_defer_ms": 12 * HOUR}, "budget"),
    ],
    ids=["cap", "stacking", "quiet_hours", "budget"],
)
def test_stacking_is_checked_after_caps_and_before_quiet_hours_and_budget(
    changes: dict[str, Any], second: str
) -> None:
    sim = Sim(guards(**{"buckets": ONE_COUPON, "max_defer_ms": HOUR, **changes}))
    # a coupon at 21:00 UTC (active until 23:00), another at 22:10: within the first's
    # ttl, in quiet hours for longer than an hour, and beyond the day's budget
    sim.feed(sim.milk("ann", T0 + 4 * HOUR + 50 * MINUTE), sim.milk("ann", NIGHT, sku="cream"))
    sim.until(NIGHT + 11 * MINUTE)
    assert sim.verdicts() == ["emitted", second]


# -- shadow and disabled rules ---------------------------------------------------------------

FRESH_THEN = (
    "    then: {type: category_coupon, channel: push, params: {amount: 2, threshold: 15, "
    "currency: USD, ttl: 2h}}\n"
)


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(RULES, target)
    return target


def edit_fresh_coupon(rules: Path, old: str, new: str) -> None:
    path = rules / "cart_stall.rules.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("switch", "reason"), [("enabled: false", "disabled"), ("mode: shadow", "shadow")]
)
def test_a_shadow_or_disabled_rule_is_recorded_never_sent_never_counted(
    rules_copy: Path, switch: str, reason: str
) -> None:
    edit_fresh_coupon(rules_copy, FRESH_THEN, f"{FRESH_THEN}    {switch}\n")
    sim = Sim(guards(load_rulebook(rules_copy).guardrails, caps=(Cap(1, DAY),)), rules_copy)
    sim.feed(sim.milk("ann", T0), sim.book("ann", T0))
    sim.until(T0 + 7 * HOUR)
    [fresh] = sim.decisions("cart_stall")[:1]
    assert fresh["rule"] == "cart_stall.fresh_food.coupon"
    assert (fresh["result"], fresh["reason"], fresh["arm"]) == ("suppressed", reason, None)
    # not counted by the cap of one a day: the books reminder six hours later is sent
    assert sim.verdicts() == [reason, "emitted"]
    assert [c["rule"]["id"] for c in sim.commands] == ["cart_stall.books.reminder"]
    assert sim.core.budget.spent == {}


def test_shadow_mode_of_the_shipped_rules_for_an_unknown_order() -> None:
    sim = Sim(guards())
    sim.feed(sim.ev("order_cancel_requested", "cy", T0, order_id="never-seen"))
    [record] = sim.decisions()
    assert record["rule"] == "cancel_request.unknown_order"
    assert (record["result"], record["reason"], record["arm"]) == ("suppressed", "shadow", None)
    assert sim.commands == []
    assert sim.core.journeys["cy"].watches == []


# -- frequency caps ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gap", "second"),
    [(HOUR - 1, "cap"), (HOUR, "emitted"), (HOUR + 1, "emitted")],
    ids=["inside", "exactly_a_window_later", "after"],
)
def test_a_cap_window_is_rolling_and_one_exactly_a_window_earlier_no_longer_counts(
    gap: int, second: str
) -> None:
    sim = Sim(guards(caps=(Cap(1, HOUR, "cart_stall"),), stacking=False))
    sim.feed(sim.book("bo", T0, "b1"), sim.book("bo", T0 + gap, "b2"))
    sim.until(T0 + 6 * HOUR + gap + 1)
    assert sim.verdicts() == ["emitted", second]


def test_a_capped_decision_does_not_count_but_a_control_decision_does() -> None:
    sim = Sim(guards(caps=(Cap(1, 2 * HOUR, "cart_stall"),)))
    adds = [sim.book("bo", T0 + m * MINUTE, f"b{m}") for m in (0, 60, 150)]
    sim.feed(*adds)
    sim.until(T0 + 9 * HOUR)
    # 6:00 sent; 7:00 capped; 8:30 is 2.5 h after the one sent (the capped one is not counted)
    assert sim.verdicts() == ["emitted", "cap", "emitted"]

    sim = Sim(guards(caps=(Cap(1, 2 * HOUR, "cart_stall"),), default_holdout=Holdout(1.0)))
    sim.feed(*[sim.book("bo", T0 + m * MINUTE, f"b{m}") for m in (0, 60)])
    sim.until(T0 + 9 * HOUR)
    # both arms pass the same checks: a control decision counts as if it had been sent
    assert sim.verdicts() == ["holdout", "cap"]


PHONE = [{"sku": "phone", "category": "electronics.smartphone", "price": 300.0}]


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        ((Cap(1, DAY, "cart_stall"),), ["emitted", "emitted", "emitted"]),
        ((Cap(1, DAY, "cross_sell"),), ["emitted", "emitted", "emitted"]),
        ((Cap(2, DAY),), ["emitted", "emitted", "cap"]),
        ((Cap(3, DAY),), ["emitted", "emitted", "emitted"]),
        ((Cap(5, DAY, "unpaid_order"), Cap(2, DAY)), ["emitted", "emitted", "cap"]),
    ],
    ids=["other_pattern", "pattern_used_once", "overall", "overall_room", "both"],
)
def test_a_pattern_cap_counts_its_pattern_and_an_overall_cap_counts_every_pattern(
    caps: tuple[Cap, ...], expected: list[str]
) -> None:
    sim = Sim(guards(caps=caps))
    ev = sim.ev
    sim.feed(
        ev("checkout_start", "mo", T0, checkout_id="c1", items=PHONE),  # cross_sell at once
        ev("checkout_submit", "mo", T0 + MINUTE, checkout_id="c1"),
        sim.book("mo", T0 + 2 * MINUTE),  # cart_stall at 6:02
        sim.order("mo", T0 + 3 * MINUTE, "o1", 50.0, T0 + HOUR),  # unpaid_order at 0:45
    )
    sim.until(T0 + 7 * HOUR)
    assert [d["pattern"] for d in sim.decisions()] == ["cross_sell", "unpaid_order", "cart_stall"]
    assert sim.verdicts() == expected


# -- no stacking ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gap", "stacking", "second"),
    [
        (2 * HOUR - 1, True, "stacking"),
        (2 * HOUR, True, "emitted"),  # the first coupon's ttl (2h) is over
        (HOUR, False, "emitted"),
    ],
    ids=["within_ttl", "ttl_over", "stacking_off"],
)
def test_one_offer_per_journey_while_the_offer_is_active_for_its_ttl(
    gap: int, stacking: bool, second: str
) -> None:
    sim = Sim(guards(caps=(), stacking=stacking))
    sim.feed(sim.milk("ann", T0), sim.milk("ann", T0 + gap, sku="cream"))
    sim.until(T0 + gap + 11 * MINUTE)
    assert sim.verdicts() == ["emitted", second]


@pytest.mark.parametrize(("gap", "second"), [(3 * HOUR - 1, "stacking"), (3 * HOUR, "emitted")])
def test_an_offer_without_a_ttl_param_stays_active_for_the_default_offer_ttl(
    rules_copy: Path, gap: int, second: str
) -> None:
    edit_fresh_coupon(rules_copy, "currency: USD, ttl: 2h}}", "currency: USD}}")
    g = guards(load_rulebook(rules_copy).guardrails, caps=(), offer_ttl_ms=3 * HOUR)
    sim = Sim(g, rules_copy)
    sim.feed(sim.milk("ann", T0), sim.milk("ann", T0 + gap, sku="cream"))
    sim.until(T0 + gap + 11 * MINUTE)
    assert sim.verdicts() == ["emitted", second]


def test_reminders_are_never_blocked_by_an_active_offer() -> None:
    sim = Sim(guards(caps=()))
    sim.feed(
        sim.milk("ann", T0),  # coupon at 0:10, active until 2:10
        sim.ev.add("ann", T0 + 5 * MINUTE, sku="rake", category="garden"),  # push reminder 1:05
        sim.ev("cashier_enter", "ann", T0 + 6 * MINUTE, order_id="o1"),  # in-app reminder 0:16
    )
    sim.until(T0 + 2 * HOUR)
    assert [(d["rule"], d["result"]) for d in sim.decisions()] == [
        ("cart_stall.fresh_food.coupon", "emitted"),
        ("payment_stall.no_failure.reminder", "emitted"),
        ("cart_stall.default.reminder", "emitted"),
    ]


def test_offers_on_order_patterns_are_per_order_and_apart_from_the_journeys() -> None:
    sim = Sim(guards(caps=()))
    sim.feed(
        sim.declined("pat", T0, "o1"),  # payment coupon on o1 at 0:03
        sim.declined("pat", T0 + MINUTE, "o2"),  # on o2 at 0:04: another order
        sim.milk("pat", T0 + 2 * MINUTE),  # cart coupon at 0:12: the journey's own offer
        sim.declined("pat", T0 + 10 * MINUTE, "o1"),  # o1 again at 0:13: stacked
    )
    sim.until(T0 + HOUR)
    assert [(d["pattern"], d["reason"] or d["result"]) for d in sim.decisions()] == [
        ("payment_stall", "emitted"),
        ("payment_stall", "emitted"),
        ("cart_stall", "emitted"),
        ("payment_stall", "stacking"),
    ]
    assert [c["fact"].get("order_id") for c in sim.commands] == ["o1", "o2", None]


# -- quiet hours ---------------------------------------------------------------------------


def test_a_push_in_quiet_hours_is_deferred_then_released_when_the_watermark_passes() -> None:
    sim = Sim(guards())
    sim.feed(sim.milk("ann", NIGHT))
    out = sim.until(NIGHT + 10 * MINUTE + 1)  # stalls at 22:10 UTC
    [record] = sim.decisions()
    assert (record["result"], record["reason"], record["arm"]) == ("deferred", None, "treatment")
    assert record["release_at_ms"] == MORNING
    assert record["release_at"] == "2025-11-25T08:00:00.000Z"
    assert out.commands == []
    assert out.decisions == [("cart_stall", "cart_stall.fresh_food.coupon", "deferred")]
    journey = sim.core.journeys["ann"]
    assert [d[0] for d in journey.deferred] == [MORNING]
    assert len(journey.charges) == 1  # the budget is committed when decided
    assert sim.until(MORNING).commands == []
    out = sim.until(MORNING + 1)
    assert out.released == 1
    [command] = out.commands
    assert command["intervention_id"] == record["id"]
    assert command["deferred_until"] == MORNING
    assert command["intervention"]["channel"] == "push"
    assert journey.deferred == []
    assert sim.until(MORNING + HOUR).commands == []  # released once


def test_a_deferred_command_whose_aim_was_met_meanwhile_is_dropped_and_refunded() -> None:
    sim = Sim(guards())
    item = {"sku": "milk", "category": "fresh_food", "price": 6.0, "qty": 2}
    sim.feed(sim.milk("ann", NIGHT), sim.milk("bob", NIGHT))
    sim.until(NIGHT + 10 * MINUTE + 1)  # both coupons deferred to the morning
    assert [d["result"] for d in sim.decisions()] == ["deferred", "deferred"]
    spent_before = dict(sim.core.budget.spent)
    # ann buys the milk at 03:00, before the coupon would go out
    sim.feed(
        sim.ev(
            "order_created",
            "ann",
            NIGHT + 5 * HOUR,
            order_id="o1",
            items=[item],
            amount=12.0,
            pay_deadline=NIGHT + 6 * HOUR,
        ),
        sim.ev("order_paid", "ann", NIGHT + 5 * HOUR + MINUTE, order_id="o1"),
    )
    out = sim.until(MORNING + 1)
    assert [c["user_id"] for c in out.commands] == ["bob"]  # ann's coupon is not sent
    assert out.released == 1
    assert sim.core.journeys["ann"].charges == []  # and its budget is returned
    [(key, before)] = spent_before.items()
    assert sim.core.budget.spent[key] == before - 2.0
    converted = [o for o in sim.outcomes if o["kind"] == "attribution"]
    assert [(o["user_id"], o["result"]) for o in converted] == [("ann", "converted")]


def test_a_deferred_release_does_not_depend_on_how_the_watermark_moves() -> None:
    """The aim is judged at the release time: ann pays 15 s after the coupon's release,
    so it goes out, whether the watermark stops between the two or jumps past both
    (how it moves depends on the topics' interleaving, batches and idle sources)."""
    item = {"sku": "milk", "category": "fresh_food", "price": 6.0, "qty": 2}
    paid_at = MORNING + 15 * SECOND

    def run(stop_between: bool) -> Sim:
        sim = Sim(guards(), lateness_ms=MINUTE)  # the payment is not late after a stop
        sim.feed(sim.milk("ann", NIGHT))
        sim.until(NIGHT + 10 * MINUTE + 1)  # deferred to the morning
        if stop_between:
            sim.until(MORNING + 1)
        sim.feed(
            sim.ev(
                "order_created",
                "ann",
                paid_at - 2 * SECOND,
                order_id="o1",
                items=[item],
                amount=12.0,
                pay_deadline=NIGHT + 20 * HOUR,
            ),
            sim.ev("order_paid", "ann", paid_at, order_id="o1"),
        )
        sim.until(MORNING + HOUR)
        return sim

    stepped, jumped = run(stop_between=True), run(stop_between=False)
    assert [c["intervention_id"] for c in stepped.commands] == [
        c["intervention_id"] for c in jumped.commands
    ]
    [command] = jumped.commands
    assert command["deferred_until"] == MORNING
    assert stepped.outcomes == jumped.outcomes
    converted = [o for o in jumped.outcomes if o["kind"] == "attribution"]
    assert [(o["result"], o["at_ms"]) for o in converted] == [("converted", paid_at)]
    assert len(jumped.core.journeys["ann"].charges) == 1  # sent: its budget stays spent


@pytest.mark.parametrize(
    ("timezone", "default", "add_at", "release"),
    [
        (None, "UTC", NIGHT, MORNING),
        (None, "UTC", T0, None),
        ("Asia/Shanghai", "UTC", T0, T0 + 8 * HOUR),  # 00:10 local; 08:00 local is 00:00 UTC
        ("America/New_York", "UTC", T0 + 8 * HOUR, None),  # 00:10 UTC is 19:10 in New York
        (None, "Asia/Shanghai", T0, T0 + 8 * HOUR),  # no zone of their own: the default
        ("America/New_York", "Asia/Shanghai", T0, None),  # their own zone first: 11:10
    ],
    ids=["utc_night", "utc_day", "shanghai", "new_york", "default_zone", "own_zone_first"],
)
def test_quiet_hours_follow_the_shoppers_local_time(
    timezone: str | None, default: str, add_at: int, release: int | None
) -> None:
    sim = Sim(guards(default_timezone=default))
    extra = {"timezone": timezone} if timezone else {}
    sim.feed(sim.milk("ann", add_at, **extra))
    sim.until(add_at + 11 * MINUTE)
    [record] = sim.decisions()
    assert record["result"] == ("deferred" if release else "emitted")
    assert record["release_at_ms"] == release
    assert len(sim.commands) == (0 if release else 1)
    if release is not None:
        sim.until(release + 1)
        assert [c["deferred_until"] for c in sim.commands] == [release]


def test_in_app_is_never_deferred() -> None:
    sim = Sim(guards())
    sim.feed(
        sim.book("ann", T0),  # stalls at 22:00 UTC
        sim.ev("checkout_start", "ann", T0 + 7 * HOUR, checkout_id="c1", items=PHONE),  # 23:00
    )
    sim.until(T0 + 7 * HOUR + 1)
    assert [(d["pattern"], d["channel"], d["result"]) for d in sim.decisions()] == [
        ("cart_stall", "in_app", "emitted"),
        ("cross_sell", "in_app", "emitted"),
    ]
    assert len(sim.commands) == 2


@pytest.mark.parametrize(
    ("max_defer", "result"),
    [(9 * HOUR + 50 * MINUTE, "deferred"), (9 * HOUR + 50 * MINUTE - 1, "quiet_hours")],
    ids=["exactly_max_defer", "longer_than_max_defer"],
)
def test_a_deferral_longer_than_max_defer_is_suppressed(max_defer: int, result: str) -> None:
    sim = Sim(guards(max_defer_ms=max_defer))
    sim.feed(sim.milk("ann", NIGHT))  # 22:10 to 08:00: 9 h 50 m
    sim.until(MORNING + 1)
    assert sim.verdicts() == [result]
    assert len(sim.commands) == (1 if result == "deferred" else 0)


@pytest.mark.parametrize(
    ("deadline", "result"),
    [(MORNING, "quiet_hours"), (MORNING + 1, "deferred")],
    ids=["release_at_the_deadline", "release_before_the_deadline"],
)
def test_a_reminder_deferred_past_an_unpaid_orders_deadline_is_suppressed(
    deadline: int, result: str
) -> None:
    sim = Sim(guards())
    sim.feed(sim.order("ann", MORNING - HOUR, "o1", 50.0, deadline))  # reminded at 07:45
    sim.until(MORNING + 2)
    [record] = sim.decisions()
    assert (record["pattern"], record["channel"]) == ("unpaid_order", "push")
    assert (record["reason"] or record["result"]) == result


def test_a_retention_offer_is_never_deferred_it_must_land_before_the_cancellation() -> None:
    sim = Sim(guards(quiet_hours={"in_app": QuietHours(22, 8)}))
    sim.feed(
        sim.book("ann", T0),  # in-app reminder at 22:00: deferred like any other
        sim.order("ann", NIGHT, "o1", 150.0, NIGHT + 2 * HOUR),
        sim.ev("order_cancel_requested", "ann", NIGHT + 30 * MINUTE, order_id="o1"),
    )
    sim.until(NIGHT + HOUR)
    by_pattern = {d["pattern"]: d for d in sim.decisions()}
    assert by_pattern["cart_stall"]["result"] == "deferred"
    cancel = by_pattern["cancel_request"]
    assert (cancel["result"], cancel["reason"]) == ("suppressed", "quiet_hours")
    assert sim.commands == []


# -- budget --------------------------------------------------------------------------------


def test_a_spent_bucket_suppresses_with_reason_budget_until_the_next_day() -> None:
    # 4 USD a day: a slice of 2 for the one partition, a pool of 2; each coupon is 2 USD
    sim = Sim(guards(caps=(), buckets={"fresh_food": Bucket("fresh_food", {"USD": 4.0})}))
    sim.feed(*[sim.milk(user, T0) for user in ("u1", "u2", "u3")])
    sim.until(STALL + 1)
    assert sim.verdicts() == ["emitted", "emitted", "budget"]
    assert [c["user_id"] for c in sim.commands] == ["u1", "u2"]
    sim.feed(sim.milk("u4", T0 + DAY))
    sim.until(T0 + DAY + 11 * MINUTE)
    assert sim.verdicts()[-1] == "emitted"  # a new day, a new budget
    days = sorted(sim.core.budget.spent.items())
    assert [(key[:2], spent) for key, spent in days] == [
        (("fresh_food", "USD"), 4.0),
        (("fresh_food", "USD"), 2.0),
    ]
    assert days[1][0][2] == days[0][0][2] + 1


def test_control_decisions_are_never_charged() -> None:
    bucket = {"fresh_food": Bucket("fresh_food", {"USD": 2.0})}  # one coupon's worth
    sim = Sim(guards(caps=(), buckets=bucket, default_holdout=Holdout(1.0)))
    sim.feed(*[sim.milk(user, T0) for user in ("u1", "u2", "u3")])
    sim.until(STALL + 1)
    assert sim.verdicts() == ["holdout", "holdout", "holdout"]  # never "budget"
    assert sum(sim.core.budget.spent.values()) == 0
    assert all(j.charges == [] for j in sim.core.journeys.values())


def test_points_and_currency_are_budgeted_apart() -> None:
    retention = {"retention": Bucket("retention", {"USD": 10.0, "points": 200.0})}
    sim = Sim(guards(caps=(), buckets=retention, slice_share=1.0))
    orders = (("r1", 150.0), ("r2", 150.0), ("r3", 50.0), ("r4", 50.0))
    sim.feed(*[sim.order(user, T0, f"{user}-o", amount, T0 + DAY) for user, amount in orders])
    sim.feed(
        *[
            sim.ev("order_cancel_requested", user, T0 + MINUTE, order_id=f"{user}-o")
            for user, _ in orders
        ]
    )
    assert [(d["user_id"], d["unit"], d["reason"] or d["result"]) for d in sim.decisions()] == [
        ("r1", "USD", "emitted"),  # 10 USD coupon: the USD budget is spent
        ("r2", "USD", "budget"),
        ("r3", "points", "emitted"),  # 200 points: the points budget is untouched by USD
        ("r4", "points", "budget"),
    ]
    assert {key[:2]: v for key, v in sim.core.budget.spent.items()} == {
        ("retention", "USD"): 10.0,
        ("retention", "points"): 200.0,
    }


# -- holdout -------------------------------------------------------------------------------


def test_holdout_arms_are_deterministic_and_near_their_share_over_ten_thousand_shoppers() -> None:
    sim = Sim(guards(default_holdout=Holdout(0.10)))
    users = [f"shopper-{i}" for i in range(10_000)]
    sim.feed(*[sim.ev("checkout_start", u, T0, checkout_id=f"c-{u}", items=PHONE) for u in users])
    records = sim.decisions("cross_sell")
    assert len(records) == len(users)
    control = {r["user_id"] for r in records if r["arm"] == "control"}
    assert 0.09 < len(control) / len(users) < 0.11
    # the arm is a pure function of the shopper and the ruleset's salt (its name)
    assert control == {u for u in users if in_holdout(u, "cross_sell", 0.10)}
    for r in records:
        if r["arm"] == "control":
            assert (r["result"], r["reason"]) == ("suppressed", "holdout")
        else:
            assert (r["arm"], r["result"], r["reason"]) == ("treatment", "emitted", None)
    assert {c["user_id"] for c in sim.commands} == set(users) - control
    # control decisions are watched for their conversion like the treated ones
    assert all(sim.core.journeys[u].watches for u in control)


def test_holdout_salt_is_per_ruleset_and_a_ruleset_may_set_its_own(rules_copy: Path) -> None:
    g = BOOK.guardrails
    assert g.holdout("cart_stall") == Holdout(0.10, "cart_stall")
    users = [f"shopper-{i}" for i in range(5_000)]
    cart = {u for u in users if in_holdout(u, g.holdout("cart_stall").salt, 0.10)}
    cross = {u for u in users if in_holdout(u, g.holdout("cross_sell").salt, 0.10)}
    assert 0.05 < len(cart & cross) / len(cart) < 0.2  # independent draws, not the same set

    path = rules_copy / "cross_sell.rules.yaml"
    text = path.read_text()
    path.write_text(text.replace("rules:\n", "holdout: {share: 1.0}\nrules:\n", 1))
    book = load_rulebook(rules_copy)
    assert book.guardrails.holdout("cross_sell") == Holdout(1.0, "cross_sell")
    assert book.guardrails.holdout("checkout_abandon") == Holdout(0.10, "checkout_abandon")
    # the ruleset's own share holds its decisions back; the other rulesets keep the default
    sim = Sim(guards(book.guardrails), rules_copy)
    sim.feed(sim.ev("checkout_start", "ann", T0, checkout_id="c1", items=PHONE))
    sim.until(T0 + HOUR)
    assert [(d["pattern"], d["arm"]) for d in sim.decisions()] == [
        ("cross_sell", "control"),
        ("checkout_abandon", "treatment"),
    ]


# -- a cheaper intervention wins a tie -----------------------------------------------------

TIE = """\
ruleset: cart_stall
pattern: cart_stall
bucket: fresh_food
rules:
  - id: a.coupon_5
    owner: growth
    priority: 50
    when: price >= 1
    then: {type: category_coupon, channel: in_app, params: {amount: 5, currency: USD}}
  - id: b.coupon_2
    owner: growth
    priority: 50
    when: price >= 2
    then: {type: category_coupon, channel: in_app, params: {amount: 2, currency: USD}}
  - id: c.points
    owner: growth
    priority: 50
    when: price >= 3
    bucket: electronics
    then: {type: points, channel: in_app, params: {points: 100}}
  - id: d.reminder
    owner: growth
    priority: 50
    when: price >= 4
    then: {type: reminder, channel: in_app, params: {template: cart_waiting}}
  - id: e.vip
    owner: growth
    priority: 60
    when: segment == 'vip'
    then: {type: category_coupon, channel: in_app, params: {amount: 9, currency: USD}}
"""


@pytest.fixture
def tie_rules(rules_copy: Path) -> Path:
    (rules_copy / "cart_stall.test.yaml").unlink()
    (rules_copy / "cart_stall.rules.yaml").write_text(TIE)
    return rules_copy


@pytest.mark.parametrize(
    ("price", "segment", "winner", "also"),
    [
        (1.0, None, "a.coupon_5", []),
        (2.0, None, "b.coupon_2", ["a.coupon_5"]),  # less money first
        (3.0, None, "c.points", ["b.coupon_2", "a.coupon_5"]),  # points before money
        (4.0, None, "d.reminder", ["c.points", "b.coupon_2", "a.coupon_5"]),  # free first
        (4.0, "vip", "e.vip", ["d.reminder", "c.points", "b.coupon_2", "a.coupon_5"]),
    ],
    ids=["only_one", "cheaper_coupon", "points", "free", "priority_first"],
)
def test_between_equal_priorities_the_cheaper_intervention_wins(
    tie_rules: Path, price: float, segment: str | None, winner: str, also: list[str]
) -> None:
    book = load_rulebook(tie_rules)  # what `goldenflow rules check` runs
    sim = Sim(guards(book.guardrails, caps=()), tie_rules)
    extra = {"segment": segment} if segment else {}
    sim.feed(sim.ev.add("ann", T0, sku="rake", category="garden", price=price, **extra))
    sim.until(T0 + HOUR + 1)
    [command] = sim.commands
    assert command["rule"]["id"] == winner
    assert command["explanation"]["also_matched"] == also


TIED_BROAD = """\
ruleset: cart_stall
pattern: cart_stall
bucket: fresh_food
rules:
  - id: a.coupon
    owner: growth
    priority: 50
    when: "true"
    then: {type: category_coupon, channel: in_app, params: {amount: 2, currency: USD}}
  - id: b.reminder
    owner: growth
    priority: 50
    when: "true"
    then: {type: reminder, channel: in_app, params: {template: cart_waiting}}
"""


def test_the_checker_agrees_with_the_decider_on_which_tied_rule_can_never_win(
    tie_rules: Path,
) -> None:
    path = tie_rules / "cart_stall.rules.yaml"
    path.write_text(TIED_BROAD)
    with pytest.raises(RuleFileError) as caught:
        load_rulebook(tie_rules)
    # the free reminder wins every tie, so the coupon is the one that can never win
    [problem] = caught.value.problems
    assert problem.line == line_of(path, "id: a.coupon")
    assert problem.message.startswith("rule 'a.coupon' can never win: 'b.reminder'")
    # a reminder for some shoppers beside a coupon for all: each wins for someone
    reminder = '    when: "true"\n    then: {type: reminder'
    path.write_text(
        TIED_BROAD.replace(reminder, "    when: segment == 'vip'\n    then: {type: reminder")
    )
    book = load_rulebook(tie_rules)
    sim = Sim(guards(book.guardrails, caps=()), tie_rules)
    sim.feed(
        sim.ev.add("ann", T0, sku="rake", category="garden", segment="vip"),
        sim.ev.add("bob", T0, sku="rake", category="garden"),
    )
    sim.until(T0 + HOUR + 1)
    assert [(c["user_id"], c["rule"]["id"]) for c in sim.commands] == [
        ("ann", "b.reminder"),
        ("bob", "a.coupon"),
    ]


def line_of(path: Path, fragment: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if fragment in ln)


PROMO = """\
ruleset: promo
pattern: cart_stall
rules:
  - id: promo.free
    owner: growth
    priority: 5
    when: category == 'garden'
    then: {type: reminder, channel: in_app, params: {template: cart_waiting}}
  - id: promo.no_bucket
    owner: growth
    priority: 4
    when: category == 'toys'
    then: {type: category_coupon, channel: push, params: {amount: 3, currency: USD}}
  - id: promo.wrong_unit
    owner: growth
    priority: 3
    when: category == 'games'
    bucket: fresh_food
    then: {type: points, channel: in_app, params: {points: 50}}
  - id: promo.unknown_bucket
    owner: growth
    priority: 2
    when: category == 'dolls'
    bucket: toys
    then: {type: category_coupon, channel: push, params: {amount: 1, currency: EUR}}
"""


def test_the_checker_refuses_a_costed_rule_without_a_budgeted_bucket(rules_copy: Path) -> None:
    path = rules_copy / "promo.rules.yaml"
    path.write_text(PROMO)
    with pytest.raises(RuleFileError) as caught:
        load_rulebook(rules_copy)
    got = {(p.path, p.line): p.message for p in caught.value.problems}
    assert sorted(got) == [
        (str(path), line_of(path, "id: promo.no_bucket")),
        (str(path), line_of(path, "id: promo.wrong_unit")),
        (str(path), line_of(path, "id: promo.unknown_bucket")),
    ]
    by_rule = {message.split("'")[1]: message for message in got.values()}
    assert "spends 3 USD but names no budget bucket" in by_rule["promo.no_bucket"]
    assert "no daily points budget" in by_rule["promo.wrong_unit"]
    assert "bucket 'toys'" in by_rule["promo.unknown_bucket"]
    assert f"{path}:{line_of(path, 'id: promo.no_bucket')}: rule" in str(caught.value)
    # a free rule needs no bucket; a ruleset's bucket covers its rules
    path.write_text(PROMO.split("  - id: promo.no_bucket", maxsplit=1)[0])
    assert load_rulebook(rules_copy).decider.rules["promo.free"].cost == 0


# -- state survives a restart ----------------------------------------------------------------


def test_sent_deferred_charges_and_watches_survive_a_snapshot_and_rebuild_the_spend() -> None:
    bucket = {"fresh_food": Bucket("fresh_food", {"USD": 2.0})}  # one coupon's worth
    g = guards(buckets=bucket)
    sim = Sim(g)
    sim.feed(sim.milk("ann", NIGHT))
    sim.until(NIGHT + 11 * MINUTE)  # the coupon is deferred to the morning, and paid for
    journey = sim.core.journeys["ann"]
    assert journey.sent and journey.deferred and journey.charges and journey.watches
    snapshots = sim.core.take_dirty()
    watermark = sim.core.take_watermark()
    assert watermark is not None

    restored = core(CoreConfig(lateness_ms=0), RULES, g)
    undelivered = restored.restore([(u, raw) for u, raw in snapshots if raw is not None])
    restored.restore_watermark(watermark, None)
    assert [code for code, _ in undelivered].count("o") == 1  # the decision record
    for user, raw in snapshots:
        assert raw is not None
        assert orjson.dumps(restored.journeys[user].snapshot()) == raw
    assert dict(restored.budget.spent) == {k: v for k, v in sim.core.budget.spent.items() if v}

    # both go on alike: the budget is spent for another shopper, the coupon is released
    for c in (sim.core, restored):
        c.delivered()
    tail = [sim.milk("bea", NIGHT + 20 * MINUTE), sim.ev("cart_view", "clock", MORNING + 1)]
    before = sim.core.step([rec(e) for e in tail], now_ms=None)
    after = restored.step([rec(e) for e in tail], now_ms=None)
    assert orjson.dumps(after.commands) == orjson.dumps(before.commands)
    assert orjson.dumps(after.outcomes) == orjson.dumps(before.outcomes)
    assert [c["user_id"] for c in after.commands] == ["ann"]
    assert [(d[0], d[2]) for d in after.decisions] == [("cart_stall", "budget")]
