"""Hot reload on a running worker: broken rules are refused, valid edits apply at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from stream.config import Settings
from stream.domain.timeutil import HOUR
from tests.helpers import EventMaker, rules_with_budgets, wait_until
from tests.integration.conftest import Worker, as_json, consume, produce

pytestmark = pytest.mark.integration


def stall(settings: Settings, ev: EventMaker, user: str, t: int) -> None:
    """A fresh-food cart worth 12 left alone, then event time an hour on for that shopper."""
    add = ev.add(user, t, sku="milk", category="fresh_food", price=6.0, qty=2)
    later = ev("cart_view", user, t + HOUR)
    asyncio.run(
        produce(
            settings,
            [
                ("cart", user.encode(), orjson.dumps(add), None),
                ("cart", user.encode(), orjson.dumps(later), None),
            ],
        )
    )


def command_for(settings: Settings, user: str, seen: int) -> dict:
    records = as_json(
        asyncio.run(consume(settings, "interventions", expect=seen + 1, timeout=60, settle=0.5))
    )
    mine = [r for r in records if r["user_id"] == user]
    assert len(mine) == 1, records
    return mine[0]


def test_broken_rules_are_refused_and_the_next_valid_edit_applies(
    settings: Settings, tmp_path: Path
) -> None:
    # wall-clock event times: no quiet hours or holdout to depend on the hour of the run
    rules = rules_with_budgets(tmp_path / "rules", 1e12, order_free=False, any_hour=True)
    s = settings.model_copy(update={"rules_dir": rules})
    worker = Worker(s, tmp_path / "worker.log").start()
    try:
        ev = EventMaker()
        t = int(time.time() * 1000) - 10 * HOUR
        first_version = orjson.loads(worker.get("/health"))["ruleset_version"]

        stall(s, ev, "before", t)
        before = command_for(s, "before", 0)
        assert before["rule"] == {
            "id": "cart_stall.fresh_food.coupon",
            "ruleset_version": first_version,
        }

        # a half-written file lands in the rules folder
        (rules / "fresh.rules.yaml").write_text("ruleset: fresh\nrules:\n  - id: x\n    when: [\n")
        wait_until(
            lambda: worker.metric("goldenflow_rule_reload_failures_total") >= 1,
            30,
            "the broken file to be refused",
        )
        stall(s, ev, "during", t + 2 * HOUR)
        during = command_for(s, "during", 1)
        assert during["rule"] == before["rule"]
        assert during["intervention"] == before["intervention"]
        assert worker.running

        # the author fixes it: a bigger fresh-food coupon
        (rules / "fresh.rules.yaml").unlink()
        text = (rules / "cart_stall.rules.yaml").read_text()
        (rules / "cart_stall.rules.yaml").write_text(
            text.replace("params: {amount: 2, threshold: 15", "params: {amount: 3, threshold: 15")
        )
        wait_until(
            lambda: orjson.loads(worker.get("/health"))["ruleset_version"] != first_version,
            30,
            "the new rules to be swapped in",
        )
        new_version = orjson.loads(worker.get("/health"))["ruleset_version"]
        stall(s, ev, "after", t + 4 * HOUR)
        after = command_for(s, "after", 2)
        assert after["rule"] == {
            "id": "cart_stall.fresh_food.coupon",
            "ruleset_version": new_version,
        }
        assert after["intervention"]["params"]["amount"] == 3
        assert worker.metric("goldenflow_rule_reload_failures_total") == 1
        assert (
            f'goldenflow_ruleset_info{{version="{new_version}"}} 1.0'
            in worker.get("/metrics").decode()
        )
    finally:
        worker.stop()
