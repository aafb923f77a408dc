"""Budgets across a fleet: no bucket is ever overspent by more than one command.

A simulated fleet runs the real partition cores the way workers do (checkpoint,
then publish, then mark delivered; budget claims appended to one shared ledger
log that each worker folds at its own pace) under random schedules: partitions
interleave at random, ledger reads lag, partitions move between workers, and
workers crash between any two steps and replay their uncommitted batches onto
the last checkpoint. Whatever the schedule, the commands published, deduplicated
by intervention id, never spend more than a bucket's daily budget plus one
command's value.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.app.topics import key_partition
from stream.decide.rulebook import RuleBook, load_rulebook
from stream.domain.budget import Claim, LedgerFold, budget_day
from stream.domain.engine import CoreConfig, PartitionCore, Record
from stream.domain.guardrails import intervention_cost
from stream.domain.timeutil import HOUR, MINUTE
from tests.helpers import T0, EventMaker, rec, rules_with_budgets

PARTITIONS = 4
DAILY = 30.0  # per bucket and unit: fresh_food coupons of 2 USD -> 15 commands a day


def partition_of(user: str) -> int:
    return key_partition(user.encode(), PARTITIONS)


def traffic(rng: random.Random) -> dict[int, list[Record]]:
    """Shoppers who leave fresh food worth a coupon in the cart, then a clock tick per
    partition far ahead so every stall fires; records per partition, in offset order."""
    ev = EventMaker()
    events: list[tuple[int, str, dict[str, Any]]] = []
    for i in range(120):
        user = f"s{i}"
        at = T0 + rng.randrange(0, 6 * HOUR)
        for k in range(rng.randint(1, 3)):
            add = ev.add(user, at + k * MINUTE, sku=f"sku-{k}", category="fresh_food", price=12.0)
            events.append((at + k * MINUTE, user, add))
    events.sort(key=lambda e: e[0])
    by_partition: dict[int, list[Record]] = defaultdict(list)
    for _, user, event in events:
        by_partition[partition_of(user)].append(rec(event))
    clocks: dict[int, str] = {}
    n = 0
    while len(clocks) < PARTITIONS:
        clocks.setdefault(partition_of(f"clock-{n}"), f"clock-{n}")
        n += 1
    for p, user in clocks.items():
        by_partition[p].append(rec(ev("cart_view", user, T0 + 2 * 24 * HOUR)))
    return by_partition


@dataclass
class Stored:
    """What survives a crash for one partition: its checkpoint and committed offset."""

    snapshots: dict[str, bytes] = field(default_factory=dict)
    watermark: bytes | None = None  # the partition's record: watermark, deliveries
    committed: int = 0  # records before this offset are done


@dataclass
class Worker:
    name: str
    book: RuleBook
    log: list[Claim]
    incarnation: int = 0
    read: int = 0  # ledger records folded so far
    fold: LedgerFold | None = None
    cores: dict[int, PartitionCore] = field(default_factory=dict)
    position: dict[int, int] = field(default_factory=dict)  # next offset per partition
    unpublished: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def start(self) -> None:
        g = self.book.guardrails
        self.incarnation += 1
        self.read = 0
        self.fold = LedgerFold(g.buckets, PARTITIONS, g.slice_share)
        self.cores = {}
        self.position = {}

    def assign(self, partition: int, stored: Stored) -> list[dict[str, Any]]:
        """Take a partition over from its checkpoint; return what its outboxes still hold."""
        assert self.fold is not None
        config = CoreConfig(
            lateness_ms=MINUTE, partitions=PARTITIONS, origin=f"{self.name}.{self.incarnation}"
        )
        core = PartitionCore(
            partition,
            self.book.timing,
            self.book.decider,
            config,
            guardrails=self.book.guardrails,
            ledger=self.fold,
        )
        if stored.watermark is not None:  # first: it says which deliveries went out
            core.restore_watermark(stored.watermark, None)
        undelivered = core.restore(stored.snapshots.items())
        self.cores[partition] = core
        self.position[partition] = stored.committed
        return [r for code, r in undelivered if code == "i"]

    def read_ledger(self, upto: int) -> set[int]:
        """Fold ledger records up to ``upto``; return the partitions whose parked facts
        can now be decided again."""
        assert self.fold is not None
        retry = set()
        while self.read < min(upto, len(self.log)):
            claim = self.log[self.read]
            self.fold.apply(claim)
            core = self.cores.get(claim.partition)
            if core is not None and core.budget.settled(claim) and core.parked:
                retry.add(claim.partition)
            self.read += 1
        return retry


def run_fleet(seed: int, book: RuleBook) -> tuple[list[dict[str, Any]], int]:
    """One random schedule; returns every command published (with repeats) and crashes."""
    rng = random.Random(seed)
    records = traffic(rng)
    log: list[Claim] = []
    stored = {p: Stored() for p in range(PARTITIONS)}
    workers = [Worker(f"w{i}", book, log) for i in range(rng.randint(2, 3))]
    published: list[dict[str, Any]] = []
    owner: dict[int, Worker] = {}
    for w in workers:
        w.start()
    for p in range(PARTITIONS):
        owner[p] = workers[p % len(workers)]
        published += owner[p].assign(p, stored[p])

    def checkpoint(core: PartitionCore, p: int) -> None:
        for user, snap in core.take_dirty():
            if snap is None:
                stored[p].snapshots.pop(user, None)
            else:
                stored[p].snapshots[user] = snap
        stored[p].watermark = core.take_watermark() or stored[p].watermark

    def checkpoint_and_publish(w: Worker, p: int, commands: list[dict[str, Any]]) -> None:
        core = w.cores[p]
        checkpoint(core, p)
        log.extend(core.take_claims())  # produced to the ledger with the batch
        if rng.random() < 0.15:
            raise Crash  # after the checkpoint, before publishing
        published.extend(commands)
        core.delivered()
        if rng.random() < 0.15:
            raise Crash  # published, the delivery not yet recorded: sent again, same ids
        checkpoint(core, p)  # the delivery, at the next checkpoint
        stored[p].committed = w.position[p]

    crashes = 0
    steps = 0
    while any(owner[p].position[p] < len(records[p]) for p in range(PARTITIONS)) and steps < 5000:
        steps += 1
        p = rng.randrange(PARTITIONS)
        w = owner[p]
        action = rng.random()
        try:
            if action < 0.55:  # a batch on one partition
                start = w.position[p]
                batch = records[p][start : start + rng.randint(1, 12)]
                if not batch:
                    continue
                out = w.cores[p].step(batch, now_ms=None)
                w.position[p] = start + len(batch)
                checkpoint_and_publish(w, p, out.commands)
            elif action < 0.8:  # the worker folds some of the ledger, decides what waited
                retry = w.read_ledger(w.read + rng.randint(0, 6))
                # as the worker's timer does: parked facts with no claim in flight
                retry |= {q for q, c in w.cores.items() if c.parked and not c.budget.in_flight}
                for q in sorted(retry):
                    if owner[q] is w:
                        out = w.cores[q].retry_parked(now_ms=None)
                        checkpoint_and_publish(w, q, out.commands)
            elif action < 0.9:  # the partition moves to another worker (clean handover)
                target = rng.choice(workers)
                if target is not w:
                    w.cores.pop(p)
                    owner[p] = target
                    published += target.assign(p, stored[p])
            else:
                raise Crash
        except Crash:  # SIGKILL: everything in memory is gone; restart and reassign
            crashes += 1
            mine = [q for q in range(PARTITIONS) if owner[q] is w]
            w.start()
            w.read_ledger(rng.randint(0, len(log)))  # may start before it has read it all
            for q in mine:
                published += w.assign(q, stored[q])  # outboxes: re-sent, same ids
            # facts parked before the crash lost their claim: the next tick retries them
    return published, crashes


class Crash(Exception):
    pass


def spend(commands: list[dict[str, Any]], book: RuleBook) -> dict[tuple[str, str, int], float]:
    """Spend per bucket, unit and day of the distinct commands."""
    by_id = {c["intervention_id"]: c for c in commands}
    rules = book.decider.rules
    total: dict[tuple[str, str, int], float] = defaultdict(float)
    for cmd in by_id.values():
        iv = cmd["intervention"]
        cost, unit = intervention_cost(iv["type"], iv["params"])
        bucket = rules[cmd["rule"]["id"]].bucket
        if cost and unit and bucket:
            day = budget_day(cmd["fact"]["added_at_ms"] + cmd["fact"]["dwell_ms"])
            total[(bucket, unit, day)] += cost
    return total


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> RuleBook:
    rules = rules_with_budgets(tmp_path_factory.mktemp("fleet") / "rules", DAILY)
    return load_rulebook(Path(rules))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_no_bucket_is_overspent_by_more_than_one_command(seed: int, book: RuleBook) -> None:
    published, _ = run_fleet(seed, book)
    spent = spend(published, book)
    assert spent, "the traffic must spend something, or the test shows nothing"
    for (bucket, unit, day), amount in spent.items():
        assert amount <= DAILY + 2.0, f"{bucket} {unit} day {day}: spent {amount} of {DAILY}"


def test_the_fleet_spends_most_of_the_budget_despite_crashes(book: RuleBook) -> None:
    """Bounded overspend must not come from spending nothing: across schedules with
    crashes, the fleet still spends most of a day's budget (slices plus claims)."""
    fractions = []
    total_crashes = 0
    for seed in range(12):
        published, crashes = run_fleet(seed, book)
        total_crashes += crashes
        spent = spend(published, book)
        fractions.extend(amount / DAILY for amount in spent.values())
        ids = [c["intervention_id"] for c in published]
        by_id: dict[str, bytes] = {}
        for cmd in published:  # a repeat is always the very same command
            raw = orjson.dumps(cmd)
            assert by_id.setdefault(cmd["intervention_id"], raw) == raw
        assert len(set(ids)) <= len(ids)
    assert total_crashes > 0
    assert max(fractions) >= 0.6, fractions
