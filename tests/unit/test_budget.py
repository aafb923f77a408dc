"""Budgets in one process: slices, the claims ledger's fold, a partition's spend.

(Several workers folding one shared log: tests/unit/test_budget_property.py.)
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from stream.decide.rulebook import load_rulebook
from stream.domain.budget import (
    Bucket,
    Claim,
    LedgerFold,
    PartitionBudget,
    budget_day,
    budget_ordinal,
    read_back,
)
from stream.domain.engine import CoreConfig, PartitionCore
from stream.domain.guardrails import Holdout
from stream.domain.journey import Journey
from stream.domain.timeutil import HOUR, MINUTE
from tests.helpers import RULES, T0, EventMaker, rec

DAY1 = budget_day(T0)
DAY2 = DAY1 + 1


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def fold(daily: dict[str, float], partitions: int = 4, share: float = 0.5) -> LedgerFold:
    return LedgerFold({"b": Bucket("b", daily)}, partitions, share)


def claim(
    claim_id: str, partition: int, amount: float, day: int = DAY1, unit: str = "USD"
) -> Claim:
    return Claim(claim_id, "b", unit, day, partition, amount)


# -- slices and the pool -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "partitions", "share", "slice_", "pool"),
    [
        (1000.0, 4, 0.5, 125.0, 500.0),
        (1000.0, 4, 1.0, 250.0, 0.0),  # all in slices: nothing to claim
        (1000.0, 1, 0.0, 0.0, 1000.0),  # all pooled
        (100.0, 3, 0.5, 16.666667, 49.999999),  # rounding never hands out more than the total
    ],
)
def test_each_partition_gets_a_fixed_slice_and_the_rest_is_pooled(
    total: float, partitions: int, share: float, slice_: float, pool: float
) -> None:
    ledger = fold({"USD": total}, partitions, share)
    assert ledger.slice("b", "USD") == slice_
    assert ledger.pool("b", "USD", DAY1) == pool
    assert ledger.slice("b", "USD") * partitions + ledger.pool("b", "USD", DAY1) <= total
    # a unit or bucket without a budget has neither
    assert ledger.slice("b", "points") == ledger.pool("b", "points", DAY1) == 0
    assert ledger.slice("nope", "USD") == ledger.pool("nope", "USD", DAY1) == 0


def test_the_pool_is_granted_first_come_first_served_and_partly_when_short() -> None:
    ledger = fold({"USD": 1000.0, "points": 80.0})  # pools: 500 USD, 40 points
    log = [claim("a", 0, 300.0), claim("b", 1, 300.0), claim("c", 2, 100.0)]
    assert [ledger.apply(c) for c in log] == [300.0, 200.0, 0.0]
    assert [ledger.granted_to(p, "b", "USD", DAY1) for p in range(4)] == [300.0, 200.0, 0.0, 0.0]
    assert ledger.pool("b", "USD", DAY1) == 0
    # each day and each unit has its own pool
    assert ledger.apply(claim("d", 2, 100.0, day=DAY2)) == 100.0
    assert ledger.apply(claim("e", 3, 50.0, unit="points")) == 40.0
    assert ledger.granted_to(2, "b", "USD", DAY2) == 100.0
    assert ledger.granted_to(2, "b", "USD", DAY1) == 0.0


def test_a_claim_seen_twice_is_folded_once() -> None:
    ledger = fold({"USD": 1000.0})
    first = claim("p0/1", 0, 100.0)
    assert ledger.apply(first) == 100.0
    assert ledger.apply(first) == 0.0  # a producer retry
    assert ledger.apply(replace(first, amount=400.0)) == 0.0  # the id decides
    assert ledger.granted_to(0, "b", "USD", DAY1) == 100.0
    assert ledger.pool("b", "USD", DAY1) == 400.0


@pytest.mark.parametrize(
    "bad", [claim("x", 4, 10.0), claim("y", -1, 10.0), claim("z", 0, 0.0), claim("w", 0, -5.0)]
)
def test_a_claim_for_no_partition_or_nothing_is_granted_nothing(bad: Claim) -> None:
    ledger = fold({"USD": 1000.0})
    assert ledger.apply(bad) == 0.0
    assert ledger.pool("b", "USD", DAY1) == 500.0


def test_every_fold_of_the_same_log_agrees() -> None:
    log = [claim(f"c{i % 7}", i % 4, 10.0 * (i % 5 + 1)) for i in range(40)]
    folds = [fold({"USD": 400.0}) for _ in range(3)]
    grants = [[f.apply(c) for c in log] for f in folds]
    assert grants[0] == grants[1] == grants[2]
    assert sum(grants[0]) <= 200.0
    assert folds[0].grants == folds[1].grants


def test_forgetting_old_days_keeps_the_fold_small() -> None:
    ledger = fold({"USD": 1000.0})
    ledger.apply(claim("a", 0, 10.0, day=DAY1))
    ledger.apply(claim("b", 0, 20.0, day=DAY2))
    ledger.forget_before(DAY2)
    assert ledger.granted_to(0, "b", "USD", DAY1) == 0.0
    assert ledger.granted_to(0, "b", "USD", DAY2) == 20.0
    assert {k[2] for k in ledger.granted} == {DAY2}


def test_only_the_latest_day_and_the_day_before_can_be_spent() -> None:
    ledger = fold({"USD": 1000.0})
    day3 = DAY1 + 2
    assert ledger.apply(claim("a", 0, 10.0, day=DAY1)) == 10.0
    assert ledger.apply(claim("c", 1, 10.0, day=day3)) == 10.0
    # DAY1 is two days behind the latest claim: nothing more is granted for it
    assert ledger.pool("b", "USD", DAY1) == 0.0
    assert ledger.apply(claim("a2", 0, 10.0, day=DAY1)) == 0.0
    assert ledger.pool("b", "USD", DAY2) == 500.0  # the day before the latest still can
    assert ledger.apply(claim("b", 0, 10.0, day=DAY2)) == 10.0
    assert [c.claim_id for c in ledger.claims] == ["c", "b"]
    # folding the claims kept again (a rule reload) gives the same grants
    again = fold({"USD": 1000.0})
    for c in ledger.claims:
        again.apply(c)
    assert again.grants == ledger.grants and again.latest_day == day3


def test_the_fold_stays_small_however_many_days_it_reads() -> None:
    ledger = fold({"USD": 1000.0})
    for day in range(DAY1, DAY1 + 60):
        for i in range(20):
            ledger.apply(claim(f"{day}/{i}", i % 4, 1.0, day=day))
    last = DAY1 + 59
    assert len(ledger.claims) == 40 and {c.day for c in ledger.claims} == {last - 1, last}
    assert {k[2] for k in ledger.granted} == {last - 1, last}
    assert {k[2] for k in ledger.grants} == {last - 1, last}
    assert ledger.apply(claim(f"{last}/0", 0, 1.0, day=last)) == 0.0  # still known
    assert ledger.apply(claim(f"{DAY1}/0", 0, 1.0, day=DAY1)) == 0.0  # a day gone by
    # the ids seen are those of the two days' claims only
    assert ledger._seen == {c.claim_id for c in ledger.claims} and len(ledger._seen) == 40


def test_claim_records_round_trip() -> None:
    c = Claim("w1/3/739579/fresh_food/USD/2", "fresh_food", "USD", 739_579, 3, 12.5)
    assert Claim.from_record(c.to_record()) == c


# -- a partition's spend ---------------------------------------------------------------------


def test_a_partition_spends_its_slice_then_grants_synchronously_never_more_than_exists() -> None:
    ledger = fold({"USD": 100.0}, partitions=2)  # slices of 25, a pool of 50
    p0 = PartitionBudget(0, ledger, sync=True)
    p1 = PartitionBudget(1, ledger, sync=True)
    spent0 = spend_all(p0, 10.0)
    assert spent0 == 70.0  # its slice and the whole pool, in commands of 10
    assert ledger.pool("b", "USD", DAY1) == 0
    assert spend_all(p1, 10.0) == 20.0  # only its own slice is left to it
    assert spent0 + 20.0 <= 100.0
    assert p0.claims == p1.claims == []  # sync: nothing waits for a ledger


def spend_all(budget: PartitionBudget, cost: float) -> float:
    while budget.can_spend("b", "USD", DAY1, cost):
        budget.charge("b", "USD", DAY1, cost)
    return budget.spent[("b", "USD", DAY1)]


def test_an_async_claim_waits_for_the_ledger_and_only_one_is_in_flight() -> None:
    ledger = fold({"USD": 100.0}, partitions=2)  # slices of 25, a pool of 50
    p0 = PartitionBudget(0, ledger, origin="w1")
    assert not p0.can_spend("b", "USD", DAY1, 30.0)  # short: asks the pool, not granted yet
    assert not p0.can_spend("b", "USD", DAY1, 30.0)
    [asked] = p0.take_claims()  # one claim in flight per bucket and day
    assert asked == Claim(f"w1/0/{DAY1}/b/USD/1", "b", "USD", DAY1, 0, 50.0)
    assert p0.take_claims() == []
    assert ledger.apply(asked) == 50.0
    p0.settled(asked)
    assert p0.can_spend("b", "USD", DAY1, 30.0)
    assert p0.remaining("b", "USD", DAY1) == 75.0


@pytest.mark.parametrize(
    ("total", "cost", "charges", "chunk"),
    [
        (100.0, 20.0, 1, 50.0),  # 5 left of the slice of 25: the whole pool (less than 4 x 20)
        (1000.0, 5.0, 49, 125.0),  # a fair share: a quarter of the pool's 500
        (1000.0, 100.0, 1, 400.0),  # at least four commands like this one
    ],
)
def test_a_claim_ahead_is_made_when_two_more_commands_would_not_fit(
    total: float, cost: float, charges: int, chunk: float
) -> None:
    ledger = fold({"USD": total}, partitions=2)
    budget = PartitionBudget(0, ledger, origin="w1")
    for _ in range(charges - 1):
        assert budget.can_spend("b", "USD", DAY1, cost)
        budget.charge("b", "USD", DAY1, cost)
    assert budget.take_claims() == []  # enough left for two more
    assert budget.can_spend("b", "USD", DAY1, cost)
    budget.charge("b", "USD", DAY1, cost)
    [ahead] = budget.take_claims()
    assert budget.remaining("b", "USD", DAY1) < 2 * cost
    assert ahead.amount == chunk
    assert budget.awaiting("b", "USD", DAY1)
    assert ledger.apply(ahead) == chunk
    assert budget.settled(ahead)
    assert not budget.in_flight


def test_a_claim_that_lost_the_race_is_settled_with_nothing_and_may_not_ask_again() -> None:
    ledger = fold({"USD": 100.0}, partitions=2)
    p0, p1 = PartitionBudget(0, ledger, origin="a"), PartitionBudget(1, ledger, origin="b")
    assert not p0.can_spend("b", "USD", DAY1, 40.0)
    assert not p1.can_spend("b", "USD", DAY1, 40.0)
    (c0,), (c1,) = p0.take_claims(), p1.take_claims()
    assert [ledger.apply(c0), ledger.apply(c1)] == [50.0, 0.0]  # the log's order decides
    assert p0.settled(c0) and p1.settled(c1)
    assert not p0.settled(c0)  # a claim read twice settles once
    assert p0.can_spend("b", "USD", DAY1, 40.0)
    assert not p1.can_spend("b", "USD", DAY1, 40.0)
    assert p1.take_claims() == []  # the pool is empty: nothing to ask for


def test_spend_is_rebuilt_from_the_charges_kept_in_journeys() -> None:
    ledger = fold({"USD": 100.0, "points": 40.0}, partitions=2)
    budget = PartitionBudget(0, ledger, origin="w1")
    budget.charge("b", "USD", DAY1, 20.0)  # forgotten: restore starts over
    budget.restore([("b", "USD", DAY1, 10.0), ("b", "USD", DAY1, 5.0), ("b", "points", DAY1, 3.0)])
    assert dict(budget.spent) == {("b", "USD", DAY1): 15.0, ("b", "points", DAY1): 3.0}
    assert budget.remaining("b", "USD", DAY1) == 10.0
    assert budget.remaining("b", "points", DAY1) == 7.0


def test_nothing_costs_nothing() -> None:
    budget = PartitionBudget(0, fold({"USD": 0.0}), origin="w")
    assert budget.can_spend("b", "USD", DAY1, 0.0)
    assert budget.take_claims() == []


@pytest.mark.parametrize(
    ("at", "zone", "offset"),
    [
        ("2025-11-24T23:30:00+00:00", "UTC", 0),
        ("2025-11-24T23:30:00+00:00", "Asia/Tokyo", 1),  # already the 25th in Tokyo
        ("2025-11-24T03:00:00+00:00", "America/Los_Angeles", -1),  # still the 23rd
        ("2025-11-24T03:00:00+00:00", "Not/AZone", 0),  # unknown: UTC
    ],
)
def test_a_budget_day_is_the_local_date_in_the_budget_zone(at: str, zone: str, offset: int) -> None:
    assert budget_day(ms(at), zone) == DAY1 + offset
    assert abs(budget_day(ms(at), zone) - budget_ordinal(ms(at))) <= 1


# -- through the core: sync (replay) and async (a shared ledger) claims ----------------------

BOOK = load_rulebook(RULES)


def milk_stalls(users: list[str], ev: EventMaker) -> list[Any]:
    """Fresh-food adds: each stalls 10 minutes later for a 2 USD coupon."""
    events = [ev.add(u, T0, sku="milk", category="fresh_food", price=6.0, qty=2) for u in users]
    return [rec(e) for e in events]


def tick(ev: EventMaker, ts: int) -> Any:
    return rec(ev("cart_view", "clock", ts))


def test_a_fact_short_of_budget_waits_for_its_claim_and_is_decided_again() -> None:
    g = replace(
        BOOK.guardrails,
        caps=(),
        default_holdout=Holdout(0.0),
        buckets={"fresh_food": Bucket("fresh_food", {"USD": 8.0})},  # slices of 2, a pool of 4
    )
    ledger = LedgerFold(g.buckets, 2, g.slice_share)
    config = CoreConfig(lateness_ms=0, partitions=2, origin="w1")
    cores = [
        PartitionCore(p, BOOK.timing, BOOK.decider, config, guardrails=g, ledger=ledger)
        for p in (0, 1)
    ]
    firsts = []
    for c, users in zip(cores, (["a1", "a2"], ["b1", "b2"]), strict=True):
        ev = EventMaker()
        out = c.step([*milk_stalls(users, ev), tick(ev, T0 + 11 * MINUTE)], now_ms=None)
        # the slice pays for one; the second waits for the claim the first one sent ahead
        assert [d[2] for d in out.decisions] == ["emitted", "parked"]
        assert [(o["user_id"], o["result"]) for o in out.outcomes] == [(users[0], "emitted")]
        assert c.parked == {users[1]}
        assert len(c.journeys[users[1]].parked) == 1
        firsts.append(out.commands[0]["intervention_id"])

    # a parked fact is kept in the snapshot, and a restored core knows it waits
    restored = PartitionCore(0, BOOK.timing, BOOK.decider, config, guardrails=g, ledger=ledger)
    restored.restore([(u, raw) for u, raw in cores[0].take_dirty() if raw is not None])
    assert restored.parked == {"a2"}

    (c0,), (c1,) = cores[0].take_claims(), cores[1].take_claims()
    assert [ledger.apply(c1), ledger.apply(c0)] == [4.0, 0.0]  # partition 1 was first in the log
    assert cores[1].budget.settled(c1) and cores[0].budget.settled(c0)
    again = [c.retry_parked(now_ms=None) for c in cores]
    # decided again with every check: no pool left for partition 0, a grant for 1
    assert [(o["user_id"], o["result"], o["reason"]) for o in again[0].outcomes] == [
        ("a2", "suppressed", "budget")
    ]
    assert [(o["user_id"], o["result"]) for o in again[1].outcomes] == [("b2", "emitted")]
    assert [c["user_id"] for c in again[1].commands] == ["b2"]
    assert all(
        c.parked == set() and c.journeys[u].parked == []
        for c, u in zip(cores, ("a2", "b2"), strict=True)
    )
    assert [sum(c.budget.spent.values()) for c in cores] == [2.0, 4.0]  # within the 8 of the day


def test_an_in_process_ledger_grants_at_once_and_never_parks() -> None:
    g = replace(
        BOOK.guardrails,
        caps=(),
        default_holdout=Holdout(0.0),
        buckets={"fresh_food": Bucket("fresh_food", {"USD": 8.0})},
    )
    c = PartitionCore(
        0, BOOK.timing, BOOK.decider, CoreConfig(lateness_ms=0, partitions=2), guardrails=g
    )
    ev = EventMaker()
    users = ["a1", "a2", "a3", "a4"]
    out = c.step([*milk_stalls(users, ev), tick(ev, T0 + 11 * MINUTE)], now_ms=None)
    # its slice of 2 and the whole pool of 4: three coupons, then the budget is spent
    assert [d[2] for d in out.decisions] == ["emitted", "emitted", "emitted", "budget"]
    assert c.take_claims() == []
    assert c.parked == set()


def test_a_journey_never_asks_for_a_watermark_already_passed() -> None:
    """Kept state (an offer active past the horizon, a day's charges) must not make a
    journey ask to be woken at a time the watermark already passed: it would be woken
    again on every event of its partition."""
    horizon = 7 * 24 * HOUR
    journey = Journey("ann")
    journey.sent = [[T0, "cart_stall", "journey", T0 + horizon + 5 * HOUR]]
    journey.charges = [["fresh_food", "USD", budget_day(T0), 2.0]]
    watermark = T0 + horizon + HOUR
    while True:
        journey.on_notify(watermark, horizon, lambda fact: None, lambda command, wanted: None)
        due = journey.notify_at(horizon)
        if due is None:
            break
        assert due > watermark
        watermark = due
    assert journey.sent == [] and journey.charges == [] and journey.is_empty()


class CountingDecider:
    """The shipped rules, counting what they are asked."""

    def __init__(self) -> None:
        self.calls = 0

    def decide(self, fact: Any) -> Any:
        self.calls += 1
        return BOOK.decider.decide(fact)


def parked_a2(rules: CountingDecider) -> tuple[PartitionCore, LedgerFold]:
    """One partition whose slice pays for a1's coupon; a2's waits for the claim."""
    g = replace(
        BOOK.guardrails,
        caps=(),
        default_holdout=Holdout(0.0),
        buckets={"fresh_food": Bucket("fresh_food", {"USD": 8.0})},
    )
    ledger = LedgerFold(g.buckets, 2, g.slice_share)
    c = PartitionCore(
        0,
        BOOK.timing,
        rules,
        CoreConfig(lateness_ms=0, partitions=2, origin="w1"),
        guardrails=g,
        ledger=ledger,
    )
    ev = EventMaker()
    out = c.step([*milk_stalls(["a1", "a2"], ev), tick(ev, T0 + 11 * MINUTE)], now_ms=None)
    assert [d[2] for d in out.decisions] == ["emitted", "parked"] and rules.calls == 2
    return c, ledger


@pytest.mark.parametrize("rules_changed", [False, True])
def test_a_parked_fact_keeps_its_decision_until_the_rules_change(rules_changed: bool) -> None:
    first = CountingDecider()
    c, ledger = parked_a2(first)
    (claim,) = c.take_claims()
    ledger.apply(claim)
    second = CountingDecider()
    if rules_changed:  # a rule reload swaps the decider: the new rules decide again
        c.decider = second
    again = c.retry_parked(now_ms=None)
    assert [(o["user_id"], o["result"]) for o in again.outcomes] == [("a2", "emitted")]
    # only the verdict was new (the claim came back); the rules had spoken already
    assert (first.calls, second.calls) == ((2, 1) if rules_changed else (2, 0))


def test_a_retry_while_its_claim_is_still_out_leaves_a_parked_fact_alone() -> None:
    rules = CountingDecider()
    c, ledger = parked_a2(rules)
    c.take_dirty()
    c.take_dirty()  # a checkpoint later, a2's journey rests as its snapshot bytes
    assert "a2" not in c.journeys.live()
    # the timer retries what is parked; the claim has not come back
    again = c.retry_parked(now_ms=None)
    assert again.decisions == [] and again.outcomes == [] and rules.calls == 2
    assert c.parked == {"a2"}
    assert "a2" not in c.journeys.live()  # not even read again
    assert len(c.journeys["a2"].parked) == 1
    assert "a2" not in dict(c.take_dirty())  # nothing changed: nothing to write
    (claim,) = c.take_claims()
    ledger.apply(claim)
    assert c.budget.settled(claim)
    done = c.retry_parked(now_ms=None)
    assert [(o["user_id"], o["result"]) for o in done.outcomes] == [("a2", "emitted")]
    assert c.parked == set() and "a2" in dict(c.take_dirty())


def test_a_fact_waiting_for_a_claim_on_a_day_gone_by_is_decided() -> None:
    """A claim in flight when other partitions' claims two days on reach the ledger
    first is read back granted nothing: it is still settled, and the facts waiting
    for it are decided with what the partition holds, not parked for ever."""
    rules = CountingDecider()
    c, ledger = parked_a2(rules)
    (late,) = c.take_claims()
    other = Claim("w2/1/x", "fresh_food", "USD", late.day + 2, 1, 2.0)
    assert read_back(ledger, None, other) is False  # not this process's partition
    assert read_back(ledger, c.budget, late) is True  # settled, though granted nothing
    assert ledger.granted_to(0, "fresh_food", "USD", late.day) == 0.0
    again = c.retry_parked(now_ms=None)
    assert [(o["user_id"], o["result"], o["reason"]) for o in again.outcomes] == [
        ("a2", "suppressed", "budget")
    ]
    assert c.parked == set() and c.journeys["a2"].parked == []
    assert c.take_claims() == []  # and it does not ask for that day again
