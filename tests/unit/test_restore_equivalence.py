"""What a checkpoint writes is enough: a core restored from it decides like the one that
never stopped.

The changelog holds, per shopper, the last snapshot a checkpoint wrote, and the
partition's watermark record. A journey whose change a later watermark gives again
(buffered changes applied, state past the horizon dropped) is not written for it
(``JourneyStore.drift``), so what the changelog holds can be behind the live
journey; restoring it, and stepping on, must still decide exactly the same.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream.bench.traffic import steady_events
from stream.decide.rulebook import RuleBook, load_rulebook
from stream.domain.engine import CoreConfig, PartitionCore, Record
from stream.domain.timeutil import DAY, MINUTE, SECOND
from stream.generate import Plan, events_with_engine
from tests.helpers import RULES, EventMaker, core, rec

T0 = 1_790_000_000_000


def encoded(records: list[Any]) -> list[bytes]:
    return sorted(orjson.dumps(r) for r in records)


def steady(book: RuleBook) -> list[bytes]:
    """Shoppers back over days: stalls, abandons and cross-sells."""
    return [v for _, _, v in steady_events(3_000, 300, T0, span_ms=12 * DAY)]


def shoppers(book: RuleBook) -> list[bytes]:
    """Simulated shoppers answering commands: payments, cancel requests, orders."""
    return list(events_with_engine(Plan(shoppers=600, start_ms=T0, days=2.0), book))


@pytest.mark.parametrize("traffic", [steady, shoppers])
@pytest.mark.parametrize("size", [1, 37, 400])
def test_a_core_restored_from_any_checkpoint_decides_like_the_one_that_ran_on(
    size: int, traffic: Any
) -> None:
    book = load_rulebook(RULES)

    def make() -> PartitionCore:
        return PartitionCore(0, book.timing, book.decider, CoreConfig(), guardrails=book.guardrails)

    values = traffic(book)
    batches = [[Record(None, v) for v in values[i : i + size]] for i in range(0, len(values), size)]
    stops = {len(batches) // 4, len(batches) // 2, 3 * len(batches) // 4}

    ran = make()
    changelog: dict[str, bytes] = {}  # what the changelog topic holds, compacted
    watermark: bytes | None = None
    outputs: list[tuple[list[bytes], list[bytes]]] = []  # each batch's commands, outcomes
    restored_at: dict[int, PartitionCore] = {}
    drifted = 0
    for k, batch in enumerate(batches):
        out = ran.step(batch, now_ms=None)
        outputs.append((encoded(out.commands), encoded(out.outcomes)))
        drifted += sum(1 for u in ran.journeys.live() if u not in ran.journeys._saved)
        for user, snap in ran.take_dirty():
            if snap is None:
                changelog.pop(user, None)
            else:
                changelog[user] = snap
        watermark = ran.take_watermark() or watermark
        if k in stops:
            # a crash right after this checkpoint: a new core from what it wrote
            again = make()
            assert watermark is not None
            again.restore_watermark(watermark, None)  # first: it says what was delivered
            undelivered = again.restore(sorted(changelog.items()))
            # the checkpoint's outboxes go out again: this batch's outputs, exactly
            commands = [r for code, r in undelivered if code == "i"]
            outcomes = [r for code, r in undelivered if code == "o"]
            assert (encoded(commands), encoded(outcomes)) == outputs[k]
            again.delivered()
            restored_at[k] = again
        ran.delivered()
        for at, again in restored_at.items():
            if k > at:
                out = again.step(batch, now_ms=None)
                assert (encoded(out.commands), encoded(out.outcomes)) == outputs[k], (at, k)
                again.take_dirty()
                again.delivered()
    assert drifted > 0, "some journeys moved on without a changelog record"
    assert sum(len(c) for c, _ in outputs) > 50, "the traffic yields commands"
    for again in restored_at.values():
        # equal once each has seen the same watermark (the restored one may hold
        # buffered changes the other applied: notify both at the end of time)
        for one in (ran, again):
            one.finish(T0 + 40 * DAY)
        assert {u: orjson.dumps(again.journeys[u].snapshot()) for u in again.journeys} == {
            u: orjson.dumps(ran.journeys[u].snapshot()) for u in ran.journeys
        }


def test_an_immediate_pattern_right_after_a_restore_sees_what_the_checkpoint_left_buffered() -> (
    None
):
    """An order applied at a watermark after its last write drifts; a cancel request
    that is the shopper's first event after a restore must still see it applied."""
    ev = EventMaker()
    item = [{"sku": "rake", "category": "garden", "price": 150.0, "qty": 1}]
    events = [
        ev(
            "order_created",
            "ann",
            T0,
            order_id="o1",
            items=item,
            amount=150.0,
            pay_deadline=T0 + 2 * DAY,
        ),
        ev("cashier_enter", "ann", T0 + 10 * SECOND, order_id="o1", method="card"),
        ev("payment_failed", "ann", T0 + 20 * SECOND, order_id="o1", reason="declined"),
    ]
    ran = core()
    changelog: dict[str, bytes] = {}

    def checkpoint() -> None:
        for user, snap in ran.take_dirty():
            if snap is not None:
                changelog[user] = snap
        ran.delivered()

    ran.step([rec(e) for e in events], now_ms=None)  # within the lateness: buffered
    checkpoint()
    # another shopper moves the watermark past ann's events: applied, not written
    ran.step([rec(ev.add("bob", T0 + 3 * MINUTE))], now_ms=None)
    assert "ann" not in dict(ran.take_dirty()) and ran.journeys["ann"].orders
    ran.take_dirty()
    watermark = ran.take_watermark()
    assert watermark is not None
    checkpoint()

    again = core()
    again.restore_watermark(watermark, None)
    again.restore(sorted(changelog.items()))
    assert not again.journeys["ann"].orders  # as written: still buffered
    cancel = rec(ev("order_cancel_requested", "ann", T0 + 4 * MINUTE, order_id="o1"))
    a = ran.step([cancel], now_ms=None)
    b = again.step([cancel], now_ms=None)
    assert [f.fields for f in a.facts] == [f.fields for f in b.facts]
    assert a.facts and a.facts[0].fields["payment_failures"] == 1
    assert orjson.dumps(a.outcomes) == orjson.dumps(b.outcomes)
