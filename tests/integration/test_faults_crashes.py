"""Fault injection: workers killed, restarted, added and removed while traffic flows.

Three workers share 8 partitions on the embedded broker. Generated traffic is sent
in chunks; between chunks a seeded schedule of faults runs: SIGKILL of a random
worker at a random moment (restarted a little later, with traffic still arriving
while it is down), a fourth worker joining and later leaving (rebalances).

* With budgets that never bind and no order-dependent guardrails, the fleet must
  decide exactly like the same traffic stepped in-process through the core: the
  set of intervention ids equals the reference, and a repeat is an exact repeat.
* With small budgets, caps and stacking on, decisions depend on timing, so the
  checks are the guarantees: every detected pattern is decided (the decision ids
  equal the reference's), no bucket spends more than its budget plus one command,
  and no shopper gets more commands than a frequency cap allows.

``GOLDENFLOW_FAULTS=long`` runs more shoppers and more rounds (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.config import Settings
from stream.decide.rulebook import RuleBook, load_rulebook
from stream.domain.budget import budget_day
from stream.domain.engine import CoreConfig, PartitionCore, Record
from stream.domain.guardrails import intervention_cost
from stream.domain.timeutil import DAY, HOUR, MINUTE, parse_ts
from tests.helpers import rules_with_budgets, wait_until
from tests.integration.conftest import (
    Worker,
    as_json,
    consume_to_end,
    produce,
)
from tests.integration.test_recovery import (
    KINDS,
    PARTITIONS,
    Message,
    assigned,
    message_partition,
    ticks,
    traffic,
)

LONG = os.environ.get("GOLDENFLOW_FAULTS", "").strip().lower() == "long"
pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400 if LONG else 600)]
SHOPPERS = 12_000 if LONG else 3_000
ROUNDS = 10 if LONG else 3  # SIGKILL rounds
CHUNK = 400  # messages per produce call; faults happen between chunks
DRAIN_TIMEOUT = 600 if LONG else 240
LATENESS_MS = 10 * MINUTE
SMALL_BUDGET = 50.0  # per bucket and unit and day: USD buckets bind, points ones never pay
#: The one way a worker may die here without being killed: faust-streaming 0.15.3's
#: table recovery swallows the "rebalance again" signal while it waits for changelogs,
#: carries on with the next generation's standby partitions and seeks to offset None
#: (docs/reliability.md, "Known issues"). Such a worker is restarted, as an
#: orchestrator would, and counted; any other exit fails the test.
KNOWN_RACE = "Offset must be a positive integer"


@dataclass
class Reference:
    """The fault-free outcome of the same traffic, in-process."""

    command_ids: set[str] = field(default_factory=set)
    decision_ids: set[str] = field(default_factory=set)
    #: id -> (partition, pattern): where what is missing after a failure was decided
    where: dict[str, tuple[int, str]] = field(default_factory=dict)

    def missing(self, ids: set[str], got: set[str]) -> str:
        """What is missing, by partition and pattern, for a failure message."""
        counts: dict[tuple[int, str], int] = defaultdict(int)
        for i in ids - got:
            counts[self.where.get(i, (-1, "?"))] += 1
        return f"missing {len(ids - got)} of {len(ids)}: {dict(sorted(counts.items()))}"


def reference(messages: list[Message], rules: Path) -> Reference:
    book = load_rulebook(rules)
    config = CoreConfig(lateness_ms=LATENESS_MS, sources=KINDS, partitions=PARTITIONS)
    cores = {
        p: PartitionCore(p, book.timing, book.decider, config, guardrails=book.guardrails)
        for p in range(PARTITIONS)
    }
    ref = Reference()
    for message in messages:
        kind, _, value, _ = message
        p = message_partition(message)
        out = cores[p].step([Record(kind, value)], now_ms=None)
        cores[p].delivered()
        for c in out.commands:
            ref.command_ids.add(c["intervention_id"])
            ref.where[c["intervention_id"]] = (p, c["pattern"])
        for r in out.outcomes:
            if r["kind"] == "decision":
                ref.decision_ids.add(r["id"])
                ref.where[r["id"]] = (p, r.get("pattern", "?"))
    return ref


@dataclass
class Figures:
    rounds: int = 0
    kills: int = 0
    restarts: int = 0
    unexpected_exits: int = 0
    joins: int = 0
    leaves: int = 0
    events: int = 0

    def line(self, **more: Any) -> str:
        parts = {**self.__dict__, **more}
        return " ".join(f"{k}={v}" for k, v in parts.items())


class Chaos:
    """A seeded plan of faults between chunks of traffic, applied to a live fleet."""

    def __init__(self, seed: int, workers: list[Worker], spare: Worker, chunks: int) -> None:
        self.rng = random.Random(seed)
        self.workers = workers
        self.spare = spare
        self.figures = Figures()
        self.down: list[tuple[int, Worker]] = []  # (chunk to restart at, worker)
        self.log_at: dict[int, int] = {}  # where each worker's log began at its last start
        # Kill rounds spread over the stream (never the last chunk: restart needs traffic
        # after it); the spare joins in the first third and leaves in the second.
        slots = list(range(1, max(2, chunks - 1)))
        self.kill_at = sorted(self.rng.sample(slots, min(ROUNDS, len(slots))))
        self.join_at = self.rng.randrange(1, max(2, chunks // 3))
        self.leave_at = self.rng.randrange(max(self.join_at + 1, chunks // 3), max(chunks - 1, 3))

    def alive(self) -> list[Worker]:
        """The workers that should be running now (all but the killed ones, not yet back)."""
        down = {id(w) for _, w in self.down}
        spare = [self.spare] if self.figures.joins > self.figures.leaves else []
        return [w for w in self.workers if id(w) not in down] + spare

    def start(self, worker: Worker) -> None:
        self.log_at[id(worker)] = worker.log.stat().st_size if worker.log.exists() else 0
        worker.start()

    def revive(self) -> None:
        """Restart a worker that exited without being killed, if it hit the known race."""
        for w in self.alive():
            if w.running:
                continue
            with open(w.log, "rb") as f:
                f.seek(self.log_at.get(id(w), 0))
                log = f.read().decode(errors="replace")
            assert KNOWN_RACE in log, f"{w.log} exited: {log[-3000:]}"
            self.figures.unexpected_exits += 1
            self.start(w)

    def after_chunk(self, index: int) -> None:
        self.revive()
        for at, worker in list(self.down):
            if index >= at:
                self.down.remove((at, worker))
                self.start(worker)
                self.figures.restarts += 1
        if index == self.join_at:
            self.start(self.spare)
            self.figures.joins += 1
        if index == self.leave_at and self.spare.running:
            self.spare.stop(signal.SIGTERM)  # leaves the group cleanly: a rebalance
            self.figures.leaves += 1
        if index in self.kill_at:
            self.figures.rounds += 1
            victims = [w for w in self.workers if w.running]
            if len(victims) > 1:  # keep one alive so the stream always moves on
                victim = self.rng.choice(victims)
                time.sleep(self.rng.uniform(0.0, 1.5))  # a random moment in its work
                victim.stop(signal.SIGKILL)
                self.figures.kills += 1
                self.down.append((index + self.rng.randint(1, 3), victim))

    def finish(self) -> None:
        for _, worker in self.down:
            self.start(worker)
            self.figures.restarts += 1
        self.down.clear()

    def until(
        self,
        check: Callable[[], bool],
        timeout: float,
        what: str,
        explain: Callable[[], str] | None = None,
    ) -> None:
        """``wait_until``, reviving crashed workers while waiting; on a timeout the
        message says what is missing and what each worker holds."""

        def revived_then_check() -> bool:
            self.revive()
            return check()

        try:
            wait_until(revived_then_check, timeout, what)
        except AssertionError as exc:
            lines = [str(exc)] + ([explain()] if explain else []) + self.state()
            raise AssertionError("\n".join(lines)) from None

    def state(self) -> list[str]:
        lines = []
        for w in [*self.workers, self.spare]:
            if not w.running:
                lines.append(f"{w.log.name}: not running")
                continue
            marks = {}
            for line in w.get("/metrics").decode().splitlines():
                if line.startswith("goldenflow_watermark_seconds{"):
                    label, _, value = line.rpartition(" ")
                    marks[label.split('"')[1]] = int(float(value))
            lines.append(
                f"{w.log.name}: health={w.get('/health').decode()} "
                f"consumed={w.metric('goldenflow_events_consumed_total'):.0f} "
                f"late={w.metric('goldenflow_invalid_events_total', reason='late'):.0f} "
                f"duplicates={w.metric('goldenflow_duplicate_events_total'):.0f} "
                f"deadlines={w.metric('goldenflow_pending_deadlines'):.0f} "
                f"watermarks={dict(sorted(marks.items()))}"
            )
        return lines


def run_with_faults(
    workers: list[Worker], messages: list[Message], final: list[Message], seed: int
) -> Chaos:
    """Start three workers, send ``messages`` with faults in between, then ``final``."""
    *core_workers, spare = workers
    chunks = [messages[i : i + CHUNK] for i in range(0, len(messages), CHUNK)]
    chaos = Chaos(seed, core_workers, spare, len(chunks))
    for w in core_workers:
        chaos.start(w)
    chaos.until(
        lambda: assigned(core_workers) == list(range(PARTITIONS)), 90, "three workers assigned"
    )
    settings = core_workers[0].settings
    for index, chunk in enumerate(chunks):
        asyncio.run(produce(settings, chunk))
        chaos.after_chunk(index)
    chaos.finish()
    chaos.until(lambda: assigned(chaos.alive()) == list(range(PARTITIONS)), 120, "rebalanced")
    asyncio.run(produce(settings, final))
    chaos.figures.events = len(messages) + len(final)
    assert chaos.figures.kills >= min(ROUNDS, 2)
    return chaos


def read_all(settings: Settings, kind: str) -> list[dict[str, Any]]:
    """Every record of the topic, to its end."""
    return as_json(asyncio.run(consume_to_end(settings, kind)))


def test_killed_and_rebalanced_fleet_decides_exactly_like_the_reference(
    fleet: Callable[..., list[Worker]], tmp_path: Path
) -> None:
    t0 = int(time.time() * 1000) - 3 * DAY
    messages, _, _ = traffic(SHOPPERS, t0, seed=101)
    final = ticks(int(time.time() * 1000) - HOUR)
    ref = reference(messages + final, rules_with_budgets(tmp_path / "ref-rules", 1e12))
    expected = ref.command_ids
    assert len(expected) > SHOPPERS // 3

    rules = rules_with_budgets(tmp_path / "rules", 1e12)
    workers = fleet(4, partitions=PARTITIONS, rules_dir=rules, lateness_ms=LATENESS_MS)
    started = time.monotonic()
    chaos = run_with_faults(workers, messages, final, seed=2024)
    figures = chaos.figures
    settings = workers[0].settings

    def distinct() -> set[str]:
        records = read_all(settings, "interventions")
        distinct.records = records  # type: ignore[attr-defined]
        return {r["intervention_id"] for r in records}

    chaos.until(
        lambda: distinct() >= expected,
        DRAIN_TIMEOUT,
        f"{len(expected)} interventions",
        lambda: ref.missing(expected, distinct()),
    )
    time.sleep(3)  # anything extra would show up now
    got = distinct()
    records: list[dict[str, Any]] = distinct.records  # type: ignore[attr-defined]
    by_id: dict[str, dict[str, Any]] = {}
    for record in records:
        record.pop("decided_at")  # the deciding wall clock
        first = by_id.setdefault(record["intervention_id"], record)
        assert first == record, "a redelivered command must be an exact repeat"
    print(
        "\nFAULTS crashes:",
        figures.line(
            shoppers=SHOPPERS,
            ids=len(got),
            expected=len(expected),
            records=len(records),
            repeats=len(records) - len(got),
            losses=len(expected - got),
            extra=len(got - expected),
            seconds=round(time.monotonic() - started),
        ),
    )
    assert expected - got == set(), f"{len(expected - got)} interventions lost"
    assert got - expected == set(), (
        f"{len(got - expected)} interventions not in the reference\n"
        + explain_extra(got - expected, by_id, messages, workers)
    )
    chaos.revive()
    assert all(w.running for w in chaos.alive())


NOTABLE = (
    "dead-lettered",
    "set aside",
    "reading again",
    "going on from",
    "Offset must",
    "restored",
)


def explain_extra(
    ids: set[str], by_id: dict[str, dict[str, Any]], messages: list[Message], workers: list[Worker]
) -> str:
    """For a failure message: each command the reference does not have, the shopper's
    events as sent (topic, partition, type, time, id), and the workers' log lines
    about dead letters, set-aside events, offsets read again and restores."""
    lines = []
    for i in sorted(ids):
        cmd = by_id[i]
        lines.append(f"extra {i}: {orjson.dumps(cmd).decode()}")
        user = cmd.get("user_id", "").encode()
        for message in messages:
            kind, key, value, _ = message
            if key == user:
                event = orjson.loads(value)
                lines.append(
                    f"  {kind}[{message_partition(message)}] {event.get('type')} "
                    f"ts={event.get('ts')} id={event.get('event_id')}"
                )
    for w in workers:
        if w.log.exists():
            for line in w.log.read_text(errors="replace").splitlines():
                if any(mark in line for mark in NOTABLE):
                    lines.append(f"{w.log.name}: {line[:400]}")
    return "\n".join(lines)


def with_repeaters(messages: list[Message], t0: int, count: int) -> list[Message]:
    """``messages`` plus ``count`` shoppers who each leave four books in the cart within
    two hours: four stalls a day, so the cart-stall cap (2 a day) binds. In event-time
    order, as a producer would send them."""
    extra: list[tuple[int, Message]] = []
    for i in range(count):
        user = f"reader-{i}"
        for k in range(4):
            at = t0 + (i * 7 * MINUTE) % (2 * HOUR) + k * 40 * MINUTE
            add = {
                "event_id": f"reader-{i}-{k}",
                "type": "cart_add",
                "user_id": user,
                "ts": at,
                "sku": f"book-{k}",
                "category": "books",
                "price": 12.0,
            }
            extra.append((at, ("cart", user.encode(), orjson.dumps(add), None)))
    timed = [(parse_ts(orjson.loads(m[2])["ts"]), m) for m in messages]
    return [m for _, m in sorted(timed + extra, key=lambda x: x[0])]


def overspend(
    commands: list[dict[str, Any]], book: RuleBook, daily: float
) -> tuple[dict[tuple[str, str, int], float], list[str]]:
    """Spend per bucket, unit and day of the distinct commands, and what exceeds the bound."""
    rules = book.decider.rules
    spent: dict[tuple[str, str, int], float] = defaultdict(float)
    largest: dict[tuple[str, str, int], float] = defaultdict(float)
    for cmd in {c["intervention_id"]: c for c in commands}.values():
        iv = cmd["intervention"]
        cost, unit = intervention_cost(iv["type"], iv["params"])
        bucket = rules[cmd["rule"]["id"]].bucket
        if cost and unit and bucket:
            day = budget_day(parse_ts(cmd["fired_at"]), book.guardrails.default_timezone)
            spent[(bucket, unit, day)] += cost
            largest[(bucket, unit, day)] = max(largest[(bucket, unit, day)], cost)
    over = [
        f"{bucket} {unit} day {day}: spent {amount} of {daily}"
        for (bucket, unit, day), amount in spent.items()
        if amount > daily + largest[(bucket, unit, day)]
    ]
    return spent, over


def cap_breaches(commands: list[dict[str, Any]], book: RuleBook) -> list[str]:
    """Shoppers with more distinct commands in a cap's window than the cap allows."""
    by_user: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for cmd in {c["intervention_id"]: c for c in commands}.values():
        by_user[cmd["user_id"]].append((parse_ts(cmd["fired_at"]), cmd["pattern"]))
    breaches = []
    for user, sent in by_user.items():
        for at, _ in sent:
            for cap in book.guardrails.caps:
                used = sum(
                    1 for t, p in sent if at - cap.window_ms < t <= at and cap.pattern in (None, p)
                )
                if used > cap.limit:
                    breaches.append(f"{user}: {used} > {cap}")
    return breaches


def test_killed_fleet_never_overspends_a_budget_nor_breaks_a_cap(
    fleet: Callable[..., list[Worker]], tmp_path: Path
) -> None:
    t0 = int(time.time() * 1000) - 3 * DAY
    messages, _, _ = traffic(SHOPPERS, t0, seed=202)
    messages = with_repeaters(messages, t0, SHOPPERS // 20)
    final = ticks(int(time.time() * 1000) - HOUR)
    ref_rules = rules_with_budgets(tmp_path / "ref-rules", SMALL_BUDGET, order_free=False)
    ref = reference(messages + final, ref_rules)
    book = load_rulebook(ref_rules)
    assert book.guardrails.caps, "the shipped guardrails have frequency caps"

    rules = rules_with_budgets(tmp_path / "rules", SMALL_BUDGET, order_free=False)
    workers = fleet(4, partitions=PARTITIONS, rules_dir=rules, lateness_ms=LATENESS_MS)
    started = time.monotonic()
    chaos = run_with_faults(workers, messages, final, seed=4048)
    figures = chaos.figures
    settings = workers[0].settings

    def decided() -> set[str]:
        records = read_all(settings, "outcomes")
        decided.records = records  # type: ignore[attr-defined]
        return {r["id"] for r in records if r["kind"] == "decision"}

    chaos.until(
        lambda: decided() >= ref.decision_ids,
        DRAIN_TIMEOUT,
        f"{len(ref.decision_ids)} decisions",
        lambda: ref.missing(ref.decision_ids, decided()),
    )
    time.sleep(3)
    ids = decided()
    outcomes: list[dict[str, Any]] = decided.records  # type: ignore[attr-defined]
    commands = read_all(settings, "interventions")
    distinct = {c["intervention_id"] for c in commands}
    spent, over = overspend(commands, book, SMALL_BUDGET)
    breaches = cap_breaches(commands, book)
    reasons = defaultdict(int)
    for r in {r["id"]: r for r in outcomes if r["kind"] == "decision"}.values():
        reasons[r["reason"] or r["result"]] += 1
    print(
        "\nFAULTS budgets:",
        figures.line(
            shoppers=SHOPPERS,
            decisions=len(ids),
            commands=len(distinct),
            repeats=len(commands) - len(distinct),
            losses=len(ref.decision_ids - ids),
            overspent=len(over),
            cap_breaches=len(breaches),
            most_spent=max(spent.values(), default=0.0),
            budget=SMALL_BUDGET,
            seconds=round(time.monotonic() - started),
        ),
        dict(sorted(reasons.items())),
    )
    assert ref.decision_ids - ids == set(), "every detected pattern must be decided"
    assert ids - ref.decision_ids == set()
    assert over == []
    assert breaches == []
    assert reasons["budget"] > 0, "the budgets must bind, or the test shows nothing"
    assert reasons["cap"] > 0, "the caps must bind, or the test shows nothing"
    assert spent, "something must be spent"
    assert distinct <= ids
    chaos.revive()
    assert all(w.running for w in chaos.alive())
