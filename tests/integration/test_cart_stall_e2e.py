"""Cart stall end to end on the embedded broker: a real worker process, real topics."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from stream.config import Settings
from stream.domain.guardrails import in_holdout
from stream.domain.timeutil import HOUR, MINUTE
from tests.helpers import EventMaker, past_midday, wait_until
from tests.integration.conftest import Worker, as_json, consume, produce

pytestmark = pytest.mark.integration


def malformed(i: int) -> bytes:
    kinds = [
        b'{"event_id": "x", "type": "cart_add", "user_id": ',  # truncated JSON
        b"\xff\xfe not even text",
        b'{"event_id": "x", "type": "cart_add", "ts": 1764000000000, "sku": "s", '
        b'"category": "books", "price": 1}',  # no user_id
        b'{"event_id": "x", "type": "cart_add", "user_id": "u", "ts": 1764000000000, '
        b'"sku": "s", "category": "books", "price": "cheap"}',  # wrong type
        b'{"event_id": "x", "type": "cart_levitate", "user_id": "u", "ts": 1764000000000}',
    ]
    return kinds[i % len(kinds)] + b" " * (i // len(kinds))  # distinct bytes per message


@pytest.mark.parametrize("drain", ["batch", "stream"])
def test_cart_stall_commands_dead_letters_and_progress(
    settings: Settings, worker: Worker, drain: str
) -> None:
    """Both ways events reach the core (whole fetches, faust's per-event stream) give
    the same commands, outcomes and dead letters."""
    settings = worker.settings = settings.model_copy(update={"drain": drain})
    ev = EventMaker()
    # the stalls fire at midday UTC: no quiet hours hold their push commands back
    t0 = past_midday(int(time.time() * 1000), 2 * HOUR)
    messages: list[tuple[str, bytes | None, bytes, int | None]] = []
    bad_values = []
    for i in range(1000):
        user = f"shopper-{i:04d}"
        add = ev.add(user, t0 + i, sku=f"sku-{i % 50}", category="fresh_food", price=4.0)
        messages.append(("cart", user.encode(), orjson.dumps(add), None))
        if i % 10 == 0:
            bad = malformed(i // 10)
            bad_values.append(bad)
            messages.append(("cart", f"bad-{i}".encode(), bad, None))
    item = {"sku": "sku-x", "category": "fresh_food", "price": 4.0, "qty": 1}
    leaver_add = ev.add("leaver", t0, sku="sku-x", category="fresh_food", price=4.0)
    leaver_checkout = ev(
        "checkout_start", "leaver", t0 + 5 * MINUTE, checkout_id="c1", items=[item], amount=4.0
    )
    messages.append(("cart", b"leaver", orjson.dumps(leaver_add), None))
    messages.append(("checkout", b"leaver", orjson.dumps(leaver_checkout), None))

    worker.start()
    asyncio.run(produce(settings, messages))

    def consumed() -> float:
        return worker.metric("goldenflow_events_consumed_total") + worker.metric(
            "goldenflow_invalid_events_total"
        )

    wait_until(lambda: consumed() >= len(messages), 120, f"{len(messages)} messages consumed")
    # Nothing fired yet: no event has moved event time past the 10-minute dwell.
    assert worker.metric("goldenflow_commands_emitted_total") == 0

    # Move event time an hour on, on every partition.
    ticks = [
        ("cart", f"clock-{p}".encode(), orjson.dumps(ev("cart_view", f"clock-{p}", t0 + HOUR)), p)
        for p in range(settings.partitions)
    ]
    asyncio.run(produce(settings, ticks))

    # Every stall is decided; the shipped guardrails hold out 10% of shoppers per ruleset
    # (deterministically: the same shoppers every run), the rest get their command.
    shoppers = {f"shopper-{i:04d}" for i in range(1000)}
    control = {u for u in shoppers if in_holdout(u, "cart_stall", 0.10)}
    assert 50 < len(control) < 150
    expected = 1000 - len(control) + 1
    everything = as_json(
        asyncio.run(consume(settings, "interventions", expect=expected, timeout=120))
    )
    # the leaver checked out in time (no cart stall) but never submitted: checkout_abandon
    others = [(c["user_id"], c["pattern"]) for c in everything if c["pattern"] != "cart_stall"]
    assert others == [("leaver", "checkout_abandon")]
    commands = [c for c in everything if c["pattern"] == "cart_stall"]
    assert len(commands) == 1000 - len(control)
    assert len({c["intervention_id"] for c in commands}) == len(commands)
    assert {c["user_id"] for c in commands} == shoppers - control
    assert all(c["pattern"] == "cart_stall" and c["category"] == "fresh_food" for c in commands)
    assert all(c["rule"]["id"] and c["intervention"]["type"] for c in commands)

    # The outcomes topic records all 1,000 stall decisions, with their arm.
    outcomes = as_json(asyncio.run(consume(settings, "outcomes", expect=1001, timeout=60)))
    decided = [o for o in outcomes if o["kind"] == "decision" and o["pattern"] == "cart_stall"]
    assert len({o["id"] for o in decided}) == 1000
    held = {o["user_id"] for o in decided if o["arm"] == "control"}
    assert held == control
    assert all(o["reason"] == "holdout" for o in decided if o["arm"] == "control")
    treated = {o["id"] for o in decided if o["arm"] == "treatment"}
    assert treated == {c["intervention_id"] for c in commands}

    dead = asyncio.run(consume(settings, "dlq", expect=100, timeout=60))
    assert len(dead) == 100
    assert sorted(r.value for r in dead) == sorted(bad_values)
    for record in dead:
        headers = dict(record.headers)
        assert headers["goldenflow.error.reason"]
        assert headers["goldenflow.error.code"] in {
            b"not_json",
            b"missing_field",
            b"wrong_type",
            b"unknown_type",
        }
        assert headers["goldenflow.source.topic"] == settings.topic("cart").encode()
        assert int(headers["goldenflow.source.offset"]) >= 0

    # The drain asked for is the one that ran: faust's streams see the events only
    # when they go through its per-event path.
    stream_events = worker.metric("goldenflow_faust_total_events_total")
    assert stream_events == 0 if drain == "batch" else stream_events >= len(messages)
    assert worker.running
    assert orjson.loads(worker.get("/health"))["status"] == "ok"
    assert orjson.loads(worker.get("/ready")) == {"ready": True, "partitions": list(range(8))}
    assert worker.metric("goldenflow_dead_letters_total") == 100
    assert worker.metric("goldenflow_commands_emitted_total") == expected
    assert worker.metric("goldenflow_suppressions_total", reason="holdout") == len(control)
    assert worker.stop() == 0
