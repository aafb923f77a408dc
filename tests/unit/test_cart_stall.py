"""The cart-stall pattern, driven through the batch step with explicit event times."""

from __future__ import annotations

import orjson
import pytest

from stream.domain.engine import CoreConfig, PartitionCore
from stream.domain.timeutil import HOUR, MINUTE, SECOND
from tests.helpers import T0, EventMaker, core, rec


def tick(ev: EventMaker, ts: int, user: str = "clock") -> dict[str, object]:
    """Any event for another shopper: moves the watermark to ts - lateness."""
    return ev("cart_view", user, ts)


def run(c: PartitionCore, events: list[dict[str, object]], now: int | None = None) -> list[dict]:
    """Step the events; return the cart-stall commands (other patterns have their own tests)."""
    out = c.step([rec(e) for e in events], now_ms=now)
    return [cmd for cmd in out.commands if cmd["pattern"] == "cart_stall"]


def test_item_left_in_cart_fires_once_after_its_category_dwell() -> None:
    ev, c = EventMaker(), core()
    add = ev.add("alice", T0, sku="milk", category="fresh_food", price=6.0, qty=2)
    # fresh_food dwell is 10m, lateness 1m: the watermark passes T0+10m after T0+11m
    assert run(c, [add, tick(ev, T0 + 11 * MINUTE)]) == []
    commands = run(c, [tick(ev, T0 + 11 * MINUTE + 1)])
    assert len(commands) == 1
    cmd = commands[0]
    assert cmd["user_id"] == "alice"
    assert cmd["pattern"] == "cart_stall"
    assert (cmd["sku"], cmd["category"], cmd["cart_value"]) == ("milk", "fresh_food", 12.0)
    assert cmd["fired_at"] == "2025-11-24T16:10:00.000Z"
    assert cmd["intervention"]["type"] == "category_coupon"
    assert cmd["rule"]["id"] == "cart_stall.fresh_food.coupon"
    assert cmd["explanation"]["read"] == {"category_root": "fresh_food", "cart_value": 12.0}
    assert cmd["explanation"]["also_matched"] == ["cart_stall.default.reminder"]
    assert cmd["fact"]["dwell_ms"] == 10 * MINUTE
    # one firing per silence: later events do not fire it again
    assert run(c, [tick(ev, T0 + 5 * HOUR)]) == []


@pytest.mark.parametrize(
    ("category", "dwell"),
    [
        ("fresh_food", 10 * MINUTE),
        ("books", 6 * HOUR),
        ("electronics.smartphone", 2 * HOUR),  # falls back to its dotted parent
        ("garden", HOUR),  # not listed: the default
    ],
)
def test_dwell_time_follows_the_category(category: str, dwell: int) -> None:
    ev, c = EventMaker(), core(CoreConfig(lateness_ms=0))
    run(c, [ev.add("bob", T0, category=category)])
    assert run(c, [tick(ev, T0 + dwell)]) == []
    assert [cmd["category"] for cmd in run(c, [tick(ev, T0 + dwell + 1)])] == [category]


@pytest.mark.parametrize(
    "progress",
    [
        lambda ev: ev("cart_remove", "carol", T0 + MINUTE, sku="sku-1"),
        lambda ev: ev(
            "checkout_start",
            "carol",
            T0 + MINUTE,
            checkout_id="c1",
            items=[{"sku": "sku-1", "category": "fresh_food", "price": 10.0}],
        ),
        lambda ev: ev(
            "order_created",
            "carol",
            T0 + MINUTE,
            order_id="o1",
            amount=10.0,
            pay_deadline=T0 + HOUR,
            items=[{"sku": "sku-1"}],
        ),
    ],
    ids=["removed", "checked_out", "ordered"],
)
def test_a_shopper_who_moves_on_gets_no_stall(progress: object) -> None:
    ev, c = EventMaker(), core()
    run(c, [ev.add("carol", T0), progress(ev)])  # type: ignore[operator]
    assert run(c, [tick(ev, T0 + 3 * HOUR)]) == []
    assert c.journeys["carol"].cart == {}


def test_checkout_of_another_item_does_not_cancel_the_stall() -> None:
    ev, c = EventMaker(), core()
    other = [{"sku": "other", "category": "fresh_food", "price": 1.0}]
    run(
        c,
        [
            ev.add("dan", T0, sku="milk"),
            ev("checkout_start", "dan", T0 + MINUTE, checkout_id="c", items=other),
        ],
    )
    assert [cmd["sku"] for cmd in run(c, [tick(ev, T0 + HOUR)])] == ["milk"]


def test_adding_more_of_the_same_item_keeps_one_silence() -> None:
    ev, c = EventMaker(), core()
    run(c, [ev.add("erin", T0, qty=1), ev.add("erin", T0 + 5 * MINUTE, qty=2)])
    commands = run(c, [tick(ev, T0 + HOUR)])
    assert len(commands) == 1
    assert commands[0]["fact"]["qty"] == 3
    assert commands[0]["fired_at"] == "2025-11-24T16:10:00.000Z"


def test_re_adding_after_a_stall_starts_a_new_silence_with_a_new_id() -> None:
    ev, c = EventMaker(), core()
    first = run(c, [ev.add("fay", T0), tick(ev, T0 + HOUR)])
    second = run(c, [ev.add("fay", T0 + 2 * HOUR), tick(ev, T0 + 3 * HOUR)])
    assert len(first) == len(second) == 1
    assert first[0]["intervention_id"] != second[0]["intervention_id"]
    assert second[0]["fact"]["prior_stalls"] == 1


def test_late_events_are_dead_lettered_and_do_not_touch_state() -> None:
    ev, c = EventMaker(), core()  # lateness 1m
    run(c, [tick(ev, T0 + HOUR)])
    out = c.step([rec(ev.add("gus", T0 + HOUR - 2 * MINUTE))], now_ms=None)
    assert [d.code for d in out.dead_letters] == ["late"]
    assert "gus" not in c.journeys
    # within the lateness bound: accepted
    out = c.step([rec(ev.add("gus", T0 + HOUR - 30 * SECOND))], now_ms=None)
    assert out.dead_letters == []
    assert "gus" in c.journeys


def test_out_of_order_within_lateness_is_handled() -> None:
    ev, c = EventMaker(), core(CoreConfig(lateness_ms=5 * MINUTE))
    later = ev.add("hal", T0 + 2 * MINUTE, sku="b")
    earlier = ev.add("hal", T0, sku="a")
    run(c, [later, earlier])
    commands = run(c, [tick(ev, T0 + HOUR)])
    assert sorted(cmd["sku"] for cmd in commands) == ["a", "b"]


def test_event_far_ahead_of_the_worker_clock_is_dead_lettered() -> None:
    ev, c = EventMaker(), core(CoreConfig(max_future_ms=HOUR))
    out = c.step([rec(ev.add("ivy", T0 + 2 * HOUR))], now_ms=T0)
    assert [d.code for d in out.dead_letters] == ["future_timestamp"]
    assert c.watermark.value is None


def test_malformed_messages_are_dead_lettered_and_the_rest_processed() -> None:
    ev, c = EventMaker(), core()
    records = [rec(b"garbage"), rec(ev.add("jay", T0)), rec(b'{"type": "nope"}')]
    out = c.step(records, now_ms=None)
    assert [d.code for d in out.dead_letters] == ["not_json", "unknown_type"]
    assert out.dead_letters[0].record.value == b"garbage"
    assert out.events_by_type == {"cart_add": 1}


def ticking(
    c: PartitionCore, start: int, end: int, caught_up: bool = True, every: int = 500
) -> list[dict]:
    """What a worker's timer does: refresh the watermark every ``every`` ms."""
    out = []
    for now in range(start, end + 1, every):
        out += c.advance(now_ms=now, caught_up=caught_up).commands
    return out


def test_idle_partition_follows_the_wall_clock_in_live_mode() -> None:
    ev, c = EventMaker(), core(CoreConfig(lateness_ms=MINUTE, idle_ms=5 * SECOND))
    wall = 1_800_000_000_000
    run(c, [ev.add("kim", T0)], now=wall)
    assert ticking(c, wall + 500, wall + 4 * SECOND) == []  # not idle yet
    # idle: watermark = T0 - 1m + elapsed wall time; due at T0+10m -> needs 11m of idle
    assert ticking(c, wall + 4 * SECOND + 500, wall + 11 * MINUTE) == []
    fired = c.advance(now_ms=wall + 11 * MINUTE + SECOND).commands
    assert [cmd["user_id"] for cmd in fired] == ["kim"]
    assert fired[0]["decided_at"] == "2027-01-15T08:11:01.000Z"


def test_batching_does_not_change_what_fires() -> None:
    ev = EventMaker()
    log = []
    for i in range(200):
        user = f"u{i % 37}"
        t = T0 + i * 20 * SECOND
        if i % 5 == 4:
            log.append(ev("cart_remove", user, t, sku=f"s{(i - 1) % 7}"))
        else:
            log.append(ev.add(user, t, sku=f"s{i % 7}", category=("fresh_food", "books")[i % 2]))
    log.append(tick(ev, T0 + 10 * HOUR))

    def ids(batch: int) -> list[str]:
        c = core()
        out = []
        for start in range(0, len(log), batch):
            out += run(c, log[start : start + batch])
        return [cmd["intervention_id"] for cmd in out]

    one = ids(1)
    assert len(one) > 20
    assert ids(7) == one
    assert ids(len(log)) == one


def test_intervention_id_is_deterministic_across_runs() -> None:
    def once() -> list[str]:
        ev, c = EventMaker(), core()
        return [cmd["intervention_id"] for cmd in run(c, [ev.add("lea", T0), tick(ev, T0 + HOUR)])]

    assert once() == once()


def test_snapshot_restores_journeys_and_their_deadlines() -> None:
    ev, c = EventMaker(), core()
    run(c, [ev.add("max", T0, sku="a"), ev.add("max", T0 + MINUTE, sku="b", category="books")])
    dirty = c.take_dirty()
    assert [user for user, _ in dirty] == ["max"]
    restored = core()
    restored.restore([(user, snap) for user, snap in dirty if snap is not None])
    assert orjson.dumps(restored.journeys["max"].snapshot()) == dirty[0][1]
    commands = run(restored, [tick(ev, T0 + 7 * HOUR)])
    assert sorted(cmd["sku"] for cmd in commands) == ["a", "b"]


def test_emptied_journeys_are_deleted_at_the_checkpoint() -> None:
    ev, c = EventMaker(), core()
    run(c, [ev.add("ned", T0), ev("cart_remove", "ned", T0 + 1, sku="sku-1")])
    assert c.take_dirty() == [("ned", orjson.dumps(c.journeys["ned"].snapshot()))]
    run(c, [tick(ev, T0 + HOUR)])  # the watermark passes both: the cart empties
    assert c.journeys["ned"].cart == {}
    run(c, [tick(ev, T0 + 8 * 24 * HOUR)])  # past the 7-day horizon: nothing is kept
    assert dict(c.take_dirty())["ned"] is None
    assert "ned" not in c.journeys
    assert "ned" not in c.journeys


KINDS = ("cart", "checkout", "cashier", "order")


def test_a_fast_topic_does_not_make_another_topics_events_late() -> None:
    ev = EventMaker()
    c = core(CoreConfig(lateness_ms=30 * SECOND, sources=KINDS))
    item = [{"sku": "sku-1", "category": "fresh_food", "price": 10.0}]
    checkout = ev("checkout_start", "olga", T0 + 5 * MINUTE, checkout_id="c", items=item)
    add = ev.add("olga", T0)
    out = c.step([rec(checkout), rec(add)], now_ms=None)  # checkout topic consumed first
    assert out.dead_letters == []
    assert c.watermark.value is None  # cashier and order not heard from yet


def test_a_silent_topic_stops_holding_the_watermark_after_idle_ms() -> None:
    ev = EventMaker()
    wall = 1_800_000_000_000
    c = core(
        CoreConfig(lateness_ms=MINUTE, idle_ms=5 * SECOND, sources=KINDS),
    )
    c = PartitionCore(0, c.timing, c.decider, c.config, now_ms=wall)
    c.step([rec(ev.add("pia", T0))], now_ms=wall)
    assert c.watermark.value is None  # three topics not heard from, not yet idle
    # a backlog elsewhere: silence is not idleness while the consumer is behind
    c.advance(now_ms=wall + 6 * SECOND, caught_up=False)
    assert c.step([rec(tick(ev, T0 + HOUR))], now_ms=wall + 6 * SECOND).commands == []
    assert c.watermark.value is None
    # caught up again: silence counts from now, not from the last event
    assert ticking(c, wall + 7 * SECOND, wall + 11_500) == []
    out = c.advance(now_ms=wall + 12 * SECOND, caught_up=True)
    assert [cmd["user_id"] for cmd in out.commands] == ["pia"]


def test_silence_counts_only_while_the_timer_keeps_confirming_it() -> None:
    """A gap in the refreshes (a worker held up) breaks the caught-up streak."""
    ev = EventMaker()
    wall = 1_800_000_000_000
    base = core(CoreConfig(lateness_ms=MINUTE, idle_ms=5 * SECOND))
    c = PartitionCore(0, base.timing, base.decider, base.config, now_ms=wall)
    c.step([rec(ev.add("pia", T0))], now_ms=wall)
    ticking(c, wall + 500, wall + 3 * SECOND)
    # nothing for three seconds, then the timer again: silence counts from here
    ticking(c, wall + 6 * SECOND, wall + 10_500)
    assert c.watermark.value == T0 - MINUTE  # not idle: only what the event says
    c.advance(now_ms=wall + 11 * SECOND, caught_up=True)
    assert c.watermark.value == T0 - MINUTE + 11 * SECOND


def test_an_idle_mark_made_before_a_stall_does_not_move_the_watermark_after_it() -> None:
    """Every topic was quiet and read to its end, then the broker went away and the
    worker's timer was held up (a batch publishing through the outage). After it, the
    first batch brings cart events well ahead of what the other topics hold in the
    broker: the idle marks of before the outage must not count for it."""
    ev = EventMaker()
    wall = 1_800_000_000_000
    base = core(CoreConfig(lateness_ms=MINUTE, idle_ms=5 * SECOND, sources=KINDS))
    c = PartitionCore(0, base.timing, base.decider, base.config, now_ms=wall)
    item = [{"sku": "s", "category": "fresh_food", "price": 2.0}]
    c.step(
        [
            rec(ev.add("pia", T0)),
            rec(ev("checkout_start", "x", T0, checkout_id="c", items=item)),
            rec(ev("cashier_enter", "x", T0, order_id="o")),
            rec(ev("order_paid", "x", T0, order_id="o")),
        ],
        now_ms=wall,
    )
    ticking(c, wall + 500, wall + 6 * SECOND)
    held = c.watermark.value  # every topic idle: it follows the wall clock
    assert held is not None and held > T0 - MINUTE
    # twelve seconds without a refresh, then a batch of cart events only
    c.step([rec(ev.add("pia", T0 + 30 * MINUTE, sku="b"))], now_ms=wall + 18 * SECOND)
    assert c.watermark.value == held
    later = ev("checkout_start", "y", T0 + 5 * MINUTE, checkout_id="d", items=item)
    out = c.step([rec(later)], now_ms=wall + 18_100)
    assert out.dead_letters == []


def test_an_outage_longer_than_idle_ms_does_not_make_the_topics_idle() -> None:
    """While the broker cannot be reached the consumer is not caught up (its high
    waters are stale); records producers held during the outage arrive just after it
    and must not be late."""
    ev = EventMaker()
    wall = 1_800_000_000_000
    base = core(CoreConfig(lateness_ms=MINUTE, idle_ms=5 * SECOND, sources=KINDS))
    c = PartitionCore(0, base.timing, base.decider, base.config, now_ms=wall)
    records = [rec(ev.add("pia", T0 + i * SECOND)) for i in range(3)]
    item = [{"sku": "s", "category": "fresh_food", "price": 2.0}]
    records += [
        rec(ev("checkout_start", "x", T0, checkout_id="c", items=item)),
        rec(ev("cashier_enter", "x", T0, order_id="o")),
        rec(ev("order_paid", "x", T0, order_id="o")),
    ]
    c.step(records, now_ms=wall)
    c.advance(now_ms=wall + SECOND, caught_up=True)
    held = c.watermark.value
    for t in range(2, 120):  # two minutes (longer than the lateness) without a fetch
        c.advance(now_ms=wall + t * SECOND, caught_up=False)
    assert c.watermark.value == held
    c.advance(now_ms=wall + 120 * SECOND, caught_up=True)  # back, not yet delivered to
    assert c.watermark.value == held
    # what the producers held back arrives: the cart event of T0 + 10 s is not late
    out = c.step([rec(ev.add("pia", T0 + 10 * SECOND))], now_ms=wall + 121 * SECOND)
    assert out.dead_letters == []


def test_topic_interleaving_does_not_change_what_fires() -> None:
    ev = EventMaker()
    by_kind: dict[str, list[dict[str, object]]] = {k: [] for k in KINDS}
    for i in range(60):
        user, t = f"u{i % 9}", T0 + i * 30 * SECOND
        item = [{"sku": f"s{i % 4}", "category": "fresh_food", "price": 2.0}]
        by_kind["cart"].append(ev.add(user, t, sku=f"s{i % 4}"))
        if i % 3 == 0:
            by_kind["checkout"].append(
                ev("checkout_start", user, t + 10 * SECOND, checkout_id=f"c{i}", items=item)
            )
        by_kind["cashier"].append(ev("cashier_enter", f"x{i}", t, order_id=f"o{i}"))
        by_kind["order"].append(ev("order_paid", f"x{i}", t, order_id=f"o{i}"))
    for k in KINDS:
        by_kind[k].append(
            ev("cart_view", "clock", T0 + 5 * HOUR)
            if k == "cart"
            else ev(
                {
                    "checkout": "checkout_submit",
                    "cashier": "payment_success",
                    "order": "order_paid",
                }[k],
                "clock",
                T0 + 5 * HOUR,
                checkout_id="c",
                order_id="o",
            )
        )

    def run_order(order: list[str]) -> list[str]:
        c = core(CoreConfig(lateness_ms=2 * MINUTE, sources=KINDS))
        queues = {k: list(v) for k, v in by_kind.items()}
        ids = []
        for k in order:
            if queues[k]:
                out = c.step([rec(queues[k].pop(0))], now_ms=None)
                assert out.dead_letters == []
                ids += [cmd["intervention_id"] for cmd in out.commands]
        return sorted(ids)

    round_robin = [k for _ in range(70) for k in KINDS]
    cart_first = [k for k in KINDS for _ in range(70)]
    reverse_first = [k for k in reversed(KINDS) for _ in range(70)]
    baseline = run_order(round_robin)
    assert len(baseline) > 5
    assert run_order(cart_first) == baseline
    assert run_order(reverse_first) == baseline


def test_arrival_order_does_not_matter_only_event_time() -> None:
    item = [{"sku": "sku-1", "category": "fresh_food", "price": 10.0}]

    def outcome(order: list[int]) -> list[str]:
        ev = EventMaker()
        c = core(CoreConfig(lateness_ms=HOUR))
        events = [
            ev("cart_remove", "quinn", T0 - MINUTE, sku="sku-1"),  # before the add: no effect
            ev.add("quinn", T0),  # silence 1 starts, due T0+10m
            ev.add("quinn", T0 + 20 * MINUTE),  # after silence 1 fired: silence 2
            ev("checkout_start", "quinn", T0 + 25 * MINUTE, checkout_id="c", items=item),
        ]
        c.step([rec(events[i]) for i in order], now_ms=None)
        return [cmd["fired_at"] for cmd in run(c, [tick(ev, T0 + 3 * HOUR)])]

    expected = ["2025-11-24T16:10:00.000Z"]  # silence 2 ended by the checkout at +25m
    assert outcome([0, 1, 2, 3]) == expected
    assert outcome([3, 2, 1, 0]) == expected
    assert outcome([2, 0, 3, 1]) == expected


def test_outbox_makes_a_redelivery_an_exact_repeat() -> None:
    ev, c = EventMaker(), core()
    out = c.step([rec(ev.add("oli", T0)), rec(tick(ev, T0 + HOUR))], now_ms=T0 + HOUR)
    [command] = [cmd for cmd in out.commands if cmd["pattern"] == "cart_stall"]
    checkpoint = dict(c.take_dirty())
    # crash after the checkpoint, before (or after) publishing: the restored journey
    # hands back the very same command
    restored = core()
    undelivered = restored.restore([("oli", checkpoint["oli"])])
    commands = [orjson.dumps(record) for code, record in undelivered if code == "i"]
    assert commands == [orjson.dumps(command)]
    # its decision record for the outcomes topic comes back too, byte for byte
    outcomes = [orjson.dumps(record) for code, record in undelivered if code == "o"]
    assert outcomes == [orjson.dumps(r) for r in out.outcomes]
    # once published, the outbox empties; the next checkpoint records that in the
    # partition's watermark record, not in a record of the journey
    c.delivered()
    assert c.journeys["oli"].outbox == []
    assert c.take_dirty() == []
    watermark = c.take_watermark()
    assert watermark is not None
    restored_again = core()
    restored_again.restore_watermark(watermark, None)
    assert restored_again.restore([("oli", checkpoint["oli"])]) == []
    assert restored_again.journeys["oli"].outbox == []
    # without that record (a crash before it), the journey's records go out again
    assert len(core().restore([("oli", checkpoint["oli"])])) == len(undelivered)


def test_a_snapshot_from_before_deliveries_were_numbered_is_redelivered_whole() -> None:
    ev, c = EventMaker(), core()
    c.step([rec(ev.add("oli", T0)), rec(tick(ev, T0 + HOUR))], now_ms=T0 + HOUR)
    snap = orjson.loads(dict(c.take_dirty())["oli"])
    assert snap[0] == 6 and all(len(entry) == 3 for entry in snap[11])
    old = [5, *snap[1:11], [entry[:2] for entry in snap[11]], *snap[12:]]  # version 5
    c.delivered()
    watermark = c.take_watermark()  # says the delivery went out: it cannot know v5's
    assert watermark is not None
    restored = core()
    restored.restore_watermark(watermark, None)
    undelivered = restored.restore([("oli", orjson.dumps(old))])
    assert [record for _, record in undelivered] == [entry[1] for entry in snap[11]]


def test_the_watermark_survives_a_move_to_another_worker() -> None:
    ev = EventMaker()
    first = core(CoreConfig(lateness_ms=MINUTE, sources=KINDS))
    first.step(
        [
            rec(ev("cart_view", "x", T0 + HOUR)),
            rec(ev("checkout_submit", "x", T0 + HOUR, checkout_id="c")),
            rec(ev("order_paid", "x", T0 + HOUR, order_id="o")),
            rec(ev("payment_success", "x", T0 + HOUR, order_id="o")),
        ],
        now_ms=None,
    )
    snap = first.take_watermark()
    assert snap is not None and first.take_watermark() is None  # only sent when it moved
    second = core(CoreConfig(lateness_ms=MINUTE, sources=KINDS))
    second.restore_watermark(snap, None)
    assert second.watermark.value == first.watermark.value == T0 + HOUR - MINUTE
    out = second.step([rec(ev.add("late", T0))], now_ms=None)
    assert [d.code for d in out.dead_letters] == ["late"]
