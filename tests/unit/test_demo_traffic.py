"""The demo's shoppers respond to interventions: base rate without a command, base + lift
with one, and the report measures that lift when the loop runs through the real core."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from stream.decide.rulebook import load_rulebook
from stream.demo.runner import event_start
from stream.demo.traffic import (
    BASE_RATES,
    DEFAULT_LIFT,
    Emitted,
    ShopperSim,
    command_key,
)
from stream.domain.engine import CoreConfig, PartitionCore, Record
from stream.domain.timeutil import DAY, MINUTE, SECOND, format_ts
from stream.report.outcomes import Outcomes
from stream.report.uplift import Report, build_report
from tests.helpers import RULES, T0

BOOK = load_rulebook(RULES)
LATENESS = 3 * MINUTE  # the demo's at 60x


def sim(seed: int = 1, lift: float = DEFAULT_LIFT) -> ShopperSim:
    return ShopperSim(seed, dict(BOOK.timing.cart_dwell_ms), lift=lift, timing=BOOK.timing)


def command(user: str, pattern: str, at_ms: int, **fact: Any) -> dict[str, Any]:
    """The parts of an intervention command the shoppers read."""
    return {"user_id": user, "pattern": pattern, "fired_at": format_ts(at_ms), "fact": fact}


def commands_for(event: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A command for every journey the event could start (a worker that nudges everyone)."""
    user, kind, at = event["user_id"], event["type"], T0
    if kind == "cart_add":
        yield command(user, "cart_stall", at, sku=event["sku"])
    elif kind == "checkout_start":
        for pattern in ("checkout_abandon", "cross_sell"):
            yield command(user, pattern, at, checkout_id=event["checkout_id"])
    elif kind == "order_created":
        for pattern in ("payment_stall", "unpaid_order", "cancel_request"):
            yield command(user, pattern, at, order_id=event["order_id"])


def run(s: ShopperSim, shoppers: int, *, nudge: bool, step: int = MINUTE) -> list[Emitted]:
    """A shopper every 2 s of event time, spawned as time goes by and stepped ``step`` at a
    time; with ``nudge`` every journey gets its command as soon as it starts (well before
    any decision point)."""
    out: list[Emitted] = []
    spawned, t = 0, T0
    while spawned < shoppers or s.scheduled:
        while spawned < shoppers and T0 + spawned * 2 * SECOND <= t:
            s.spawn(T0 + spawned * 2 * SECOND)
            spawned += 1
        batch = s.due(t)
        out.extend(batch)
        if nudge:
            for _, _, event in batch:
                if isinstance(event, dict):
                    for cmd in commands_for(event):
                        s.on_command(cmd)
        t += step
    return out


def assert_rate(converted: int, points: int, rate: float, what: str) -> None:
    """Within 4 binomial standard deviations (a false alarm about once in 15,000 runs)."""
    sd = math.sqrt(rate * (1 - rate) / points)
    assert abs(converted / points - rate) < 4 * sd, (
        f"{what}: {converted}/{points} = {converted / points:.3f}, expected {rate:.3f}"
    )


def test_without_commands_shoppers_convert_at_the_base_rate() -> None:
    s = sim(seed=3)
    run(s, 30_000, nudge=False)
    truth = s.truth()
    assert set(truth) == set(BASE_RATES)
    assert all(set(by) == {False} for by in truth.values())  # no command, ever
    assert sum(by[False].points for by in truth.values()) >= 20_000
    for pattern, by in truth.items():
        assert by[False].points >= 500, pattern
        assert_rate(by[False].converted, by[False].points, BASE_RATES[pattern], pattern)


def test_with_a_command_shoppers_convert_at_base_plus_lift() -> None:
    lift = 0.3
    s = sim(seed=4, lift=lift)
    run(s, 30_000, nudge=True)
    truth = s.truth()
    assert sum(by[True].points for by in truth.values()) >= 20_000
    assert s.late_commands == 0
    for pattern, by in truth.items():
        assert set(by) == {True}, pattern  # every decision point had its command
        assert_rate(by[True].converted, by[True].points, BASE_RATES[pattern] + lift, pattern)


def test_a_command_after_the_decision_point_is_late_and_changes_nothing() -> None:
    s = sim()
    events = run(s, 200, nudge=False)
    stalls = s.truth()["cart_stall"][False]
    before = (stalls.points, stalls.converted)
    late = [
        s.on_command(command(e["user_id"], "cart_stall", T0, sku=e["sku"]))
        for _, _, e in events
        if isinstance(e, dict) and e["type"] == "cart_add"
    ]
    assert s.late_commands == late.count(False) == stalls.points > 0
    assert (stalls.points, stalls.converted) == before
    assert s.on_command({"pattern": "cart_stall", "user_id": "u000001"}) is False  # no subject
    cmd = command("u000001", "payment_stall", T0, order_id="o-u000001")
    assert command_key(cmd) == ("u000001", "payment_stall", "o-u000001")


def test_the_same_seed_and_commands_give_the_same_traffic_however_calls_interleave() -> None:
    first = run(sim(seed=9), 3_000, nudge=True)
    again = run(sim(seed=9), 3_000, nudge=True)
    assert again == first
    # Spawned all up front and popped in 5-minute steps: the same events (shoppers draw
    # from their own random streams; only the order within equal times may differ).
    b = sim(seed=9)
    for i in range(3_000):
        b.spawn(T0 + i * 2 * SECOND)
    coarse = run(b, 0, nudge=True, step=5 * MINUTE)

    def key(e: Emitted) -> bytes:
        return e[2] if isinstance(e[2], bytes) else orjson.dumps(e[2], option=orjson.OPT_SORT_KEYS)

    assert sorted(map(key, coarse)) == sorted(map(key, first))
    assert run(sim(seed=10), 3_000, nudge=True) != first


def test_a_lift_beyond_what_the_base_rates_allow_is_refused() -> None:
    top = max(BASE_RATES.values())
    sim(lift=1 - top)  # every chance stays within [0, 1]
    with pytest.raises(ValueError, match="lift must be between"):
        sim(lift=1 - top + 0.01)
    with pytest.raises(ValueError, match="lift must be between"):
        sim(lift=-0.5)


# -- the whole loop through the core: decisions, commands, attribution, report -----------


def closed_loop(seed: int, lift: float, shoppers_per_minute: int, minutes: int) -> Report:
    """The demo in-process: traffic into the core (one merged source, the demo's
    lateness), commands back to the shoppers at the event time they come out, then the
    closing (settle, jump past every attribution window) and the report."""
    core = PartitionCore(
        0, BOOK.timing, BOOK.decider, CoreConfig(lateness_ms=LATENESS), guardrails=BOOK.guardrails
    )
    s = sim(seed, lift)
    outcomes = Outcomes("closed loop")
    records: list[dict[str, Any]] = []

    def step(events: list[Emitted], now: int) -> None:
        batch = [Record(k, e if isinstance(e, bytes) else orjson.dumps(e)) for k, _, e in events]
        out = core.step(batch, now_ms=None)
        core.delivered()
        for cmd in out.commands:
            s.on_command(cmd, now)
        for record in out.outcomes:
            records.append(record)
            outcomes.add(orjson.dumps(record), "core")

    def tick(at: int) -> list[Emitted]:
        body = {"event_id": f"tick-{at}", "type": "cart_view", "user_id": "clock"}
        return [("cart", "clock", {**body, "ts": format_ts(at)})]

    t0 = event_start(T0)
    now, spawned = t0, 0
    while now < t0 + minutes * MINUTE:
        now += 6 * SECOND  # a producer batch every 0.1 s at 60x
        while spawned < (now - t0) * shoppers_per_minute // MINUTE:
            s.spawn(t0 + spawned * MINUTE // shoppers_per_minute)
            spawned += 1
        step(s.due(now), now)
    step(tick(now), now)
    step(s.close(now, now - LATENESS), now)
    step(tick(now + 3 * DAY), now)
    assert s.late_commands == 0
    assert not [r for r in records if r["kind"] == "decision" and r["at_ms"] >= now]
    report = build_report(outcomes, by="pattern")
    # The report's treatment arm is exactly the shoppers with a command.
    truth = s.truth()
    for group in report.groups[:-1]:
        assert group.pattern is not None
        with_command = truth[group.pattern].get(True)
        t = group.treatment
        assert (t.n, t.conversions) == (
            (with_command.points, with_command.converted) if with_command else (0, 0)
        ), group.pattern
    return report


def test_the_closed_loop_report_measures_the_configured_lift() -> None:
    report = closed_loop(seed=1, lift=DEFAULT_LIFT, shoppers_per_minute=150, minutes=60)
    total = report.total
    assert total.treatment.open == total.control.open == 0  # every window closed
    assert total.treatment.n >= 1_500 and total.control.n >= 150
    uplift = total.uplift
    assert uplift is not None
    assert uplift.low <= DEFAULT_LIFT <= uplift.high, uplift
    assert uplift.low > 0


def test_without_lift_the_closed_loop_report_finds_none() -> None:
    uplift = closed_loop(seed=2, lift=0.0, shoppers_per_minute=150, minutes=60).total.uplift
    assert uplift is not None
    assert uplift.low <= 0 <= uplift.high, uplift
