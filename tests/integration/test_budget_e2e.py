"""Budget buckets on the embedded broker: two workers, eight partitions, one ledger.

Each partition spends its slice, claims more from the pool through the ledger
topic, and a command the bucket cannot pay for is suppressed with reason
"budget". The total spent by both workers never exceeds the bucket, and spend
and remaining budget are on /metrics.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.app.topics import key_partition
from stream.broker import EmbeddedBroker, free_port
from stream.domain.timeutil import HOUR
from tests.helpers import EventMaker, rules_with_budgets, wait_until
from tests.integration.conftest import Worker, as_json, consume, isolated_settings, produce

pytestmark = pytest.mark.integration

DAILY = 40.0  # fresh_food coupons cost 2 USD: 20 of them a day, at most


def test_two_workers_share_a_bucket_without_overspending(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    rules = rules_with_budgets(tmp_path / "rules", DAILY, any_hour=True)
    settings = isolated_settings(broker, rules_dir=rules, data_dir=tmp_path / "w0")
    workers = [
        Worker(settings, tmp_path / "w0.log"),
        Worker(
            settings.model_copy(update={"web_port": free_port(), "data_dir": tmp_path / "w1"}),
            tmp_path / "w1.log",
        ),
    ]
    ev = EventMaker()
    t0 = int(time.time() * 1000) - 3 * HOUR
    messages: list[tuple[str, bytes | None, bytes, int | None]] = []
    shoppers = 200
    for i in range(shoppers):  # fresh food worth a coupon (cart value >= 10), left behind
        user = f"buyer-{i:03d}"
        add = ev.add(user, t0 + i * 1000, sku="salad", category="fresh_food", price=12.0)
        messages.append(("cart", user.encode(), orjson.dumps(add), None))
    try:
        for w in workers:
            w.start()

        def split() -> bool:
            """Both workers ready, each owning some of the eight partitions."""
            try:
                parts = [orjson.loads(w.get("/ready"))["partitions"] for w in workers]
            except OSError:  # 503 until ready
                return False
            owned = sorted(q for part in parts for q in part)
            return all(parts) and owned == list(range(settings.partitions))

        wait_until(split, 90, "both workers ready, partitions split between them")
        asyncio.run(produce(settings, messages))
        ticks = [
            ("cart", f"clock-{p}".encode(), orjson.dumps(ev("cart_view", f"c{p}", t0 + HOUR)), p)
            for p in range(settings.partitions)
        ]
        time.sleep(2)  # let the stalls be read before event time jumps
        asyncio.run(produce(settings, ticks))
        records = as_json(asyncio.run(consume(settings, "outcomes", expect=shoppers, timeout=90)))
        decided = {r["id"]: r for r in records if r["kind"] == "decision"}
        assert len(decided) == shoppers
        commands = as_json(asyncio.run(consume(settings, "interventions", expect=1, timeout=30)))
        coupons = {
            c["intervention_id"]: c
            for c in commands
            if c["intervention"]["type"] == "category_coupon"
        }
        spent = sum(c["intervention"]["params"]["amount"] for c in coupons.values())
        reasons = {r["reason"] for r in decided.values()}
        assert "budget" in reasons  # 200 shoppers, 20 coupons' worth: the bucket ran dry
        assert spent <= DAILY, f"spent {spent} of {DAILY}"
        assert spent >= DAILY / 2  # slices plus pool claims: most of it reaches shoppers
        # each coupon recorded as a treatment decision with its cost; no cost for control
        assert {i for i, r in decided.items() if r["arm"] == "treatment"} == set(coupons)
        metric_spend = sum(
            w.metric("goldenflow_budget_spend_total", bucket="fresh_food", unit="USD")
            for w in workers
        )
        assert metric_spend == spent
        remaining = [
            w.metric("goldenflow_budget_remaining", bucket="fresh_food", unit="USD")
            for w in workers
        ]
        assert all(0 <= r <= DAILY for r in remaining)
        assert sum(w.metric("goldenflow_suppressions_total", reason="budget") for w in workers)
    finally:
        for w in workers:
            w.stop()


def shoppers_of(partition: int, partitions: int, count: int, prefix: str) -> list[str]:
    """User ids whose records the default partitioner puts into ``partition``."""
    users: list[str] = []
    i = 0
    while len(users) < count:
        user = f"{prefix}-{i:04d}"
        if key_partition(user.encode(), partitions) == partition:
            users.append(user)
        i += 1
    return users


def test_a_partition_days_behind_the_ledger_decides_every_fact(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """A partition catching up on days-old traffic, while the ledger holds other
    partitions' claims of today: the pool has nothing for a day gone by, so beyond its
    slice every fact is suppressed for budget. None is parked for ever (with a fold
    that still granted old days, their claims were read back and never settled)."""
    rules = rules_with_budgets(tmp_path / "rules", DAILY, any_hour=True)
    settings = isolated_settings(broker, rules_dir=rules, data_dir=tmp_path / "w0")
    n = settings.partitions
    ev = EventMaker()
    now = int(time.time() * 1000)
    today, old = now - 3 * HOUR, now - 3 * 24 * HOUR

    def stalls(users: list[str], t0: int, partition: int) -> list[Any]:
        messages: list[tuple[str, bytes | None, bytes, int | None]] = []
        for i, user in enumerate(users):
            add = ev.add(user, t0 + i * 1000, sku="salad", category="fresh_food", price=12.0)
            messages.append(("cart", user.encode(), orjson.dumps(add), partition))
        tick = ev("cart_view", f"clock-{partition}", t0 + HOUR)
        messages.append(("cart", tick["user_id"].encode(), orjson.dumps(tick), partition))
        return messages

    current = shoppers_of(1, n, 12, "today")
    behind = shoppers_of(0, n, 12, "behind")
    worker = Worker(settings, tmp_path / "w0.log")
    try:
        worker.start()
        # partition 1 spends today's budget: claims for today go into the ledger first
        asyncio.run(produce(settings, stalls(current, today, 1)))
        first = as_json(asyncio.run(consume(settings, "outcomes", expect=len(current), timeout=60)))
        assert {r["user_id"] for r in first if r["kind"] == "decision"} == set(current)
        # partition 0 is three days behind: its claims are for a day the ledger left
        asyncio.run(produce(settings, stalls(behind, old, 0)))

        def all_decided() -> bool:
            records = as_json(asyncio.run(consume(settings, "outcomes", expect=1, timeout=5)))
            decided = {r["user_id"] for r in records if r["kind"] == "decision"}
            return set(behind) <= decided

        wait_until(all_decided, 60, "every fact of the partition behind decided")
        records = as_json(asyncio.run(consume(settings, "outcomes", expect=1, timeout=5)))
        reasons = [
            r["reason"] for r in records if r["user_id"] in behind and r["kind"] == "decision"
        ]
        assert len(reasons) == len(behind)
        assert "budget" in reasons  # beyond its slice: nothing granted for a day gone by
    finally:
        worker.stop()
