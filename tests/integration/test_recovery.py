"""Crash and recovery on the embedded broker with two workers over 8 partitions.

The reference for "nothing lost" is the same traffic stepped through the same core
in-process (no Kafka, no faults): detections do not depend on batching or topic
interleaving, so a worker fleet that loses nothing must produce exactly its set of
intervention ids, and its recovered journeys must equal the reference journeys.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from stream.app.topics import changelog_topic, key_partition
from stream.config import Settings
from stream.decide.rulebook import load_rulebook
from stream.demo.traffic import ShopperSim
from stream.domain.engine import CoreConfig, PartitionCore, Record
from stream.domain.journey import event_key
from stream.domain.timeutil import DAY, HOUR, MINUTE, SECOND, format_ts, parse_ts
from tests.helpers import RULES, rules_with_budgets, wait_until
from tests.integration.conftest import Worker, as_json, consume, produce

pytestmark = pytest.mark.integration

PARTITIONS = 8
KINDS = ("cart", "checkout", "cashier", "order")
Message = tuple[str, bytes | None, bytes, int | None]


def partition_of(key: bytes) -> int:
    return key_partition(key, PARTITIONS)


def message_partition(message: Message) -> int:
    """Where ``message`` goes: its own partition if it names one, else its key's."""
    _, key, _, partition = message
    return partition if partition is not None else partition_of(key or b"")


def traffic(shoppers: int, t0: int, seed: int) -> tuple[list[Message], list[str], int]:
    """Generated visits of ``shoppers`` shoppers over 4 hours, in event-time order."""
    sim = ShopperSim(seed, dict(load_rulebook(RULES).timing.cart_dwell_ms), malformed_share=0)
    users = [sim.spawn(t0 + i * (4 * HOUR // shoppers)) for i in range(shoppers)]
    messages: list[Message] = []
    last = t0
    for kind, key, event in sim.drain():
        assert isinstance(event, dict)
        messages.append((kind, key.encode(), orjson.dumps(event), None))
        last = max(last, parse_ts(event["ts"]))
    return messages, users, last


def ticks(at_ms: int) -> list[Message]:
    """One event per topic and partition far ahead: every deadline before it fires."""
    out: list[Message] = []
    for p in range(PARTITIONS):
        user = f"clock-{p}"
        base = {"user_id": user, "ts": format_ts(at_ms)}
        bodies = {
            "cart": {"type": "cart_view"},
            "checkout": {"type": "checkout_submit", "checkout_id": "clock"},
            "cashier": {"type": "payment_success", "order_id": user},
            "order": {"type": "order_paid", "order_id": user},
        }
        for kind in KINDS:
            body = {"event_id": f"tick-{kind}-{p}-{at_ms}", **base, **bodies[kind]}
            out.append((kind, user.encode(), orjson.dumps(body), p))
    return out


def reference(messages: list[Message], config: CoreConfig, rules: Path) -> dict[int, PartitionCore]:
    """The fault-free outcome: the same core, in-process, partitioned like the producer.

    Budgets in ``rules`` never bind: every other guardrail depends on event time only,
    so the fleet must decide exactly alike."""
    book = load_rulebook(rules)
    config.partitions = PARTITIONS
    cores = {
        p: PartitionCore(p, book.timing, book.decider, config, guardrails=book.guardrails)
        for p in range(PARTITIONS)
    }
    ids: set[str] = set()
    for message in messages:
        kind, _, value, _ = message
        p = message_partition(message)
        out = cores[p].step([Record(kind, value)], now_ms=None)
        cores[p].delivered()  # as a worker does once the commands are published
        ids.update(cmd["intervention_id"] for cmd in out.commands)
    cores[0].reference_ids = ids  # type: ignore[attr-defined]
    return cores


def assigned(workers: list[Worker]) -> list[int]:
    """Every partition, once, with each running worker owning some (else [])."""
    parts: list[int] = []
    for w in workers:
        if w.running:
            try:
                mine = orjson.loads(w.get("/health"))["partitions"]
            except OSError:
                return []
            if not mine:
                return []
            parts += mine
    return sorted(parts)


def restart(worker: Worker) -> None:
    worker.stop(signal.SIGKILL)
    time.sleep(2)
    worker.start()


def test_sigkill_mid_stream_then_restart_loses_nothing(
    fleet: Callable[..., list[Worker]], tmp_path: Path
) -> None:
    t0 = int(time.time() * 1000) - 3 * DAY
    messages, _, _ = traffic(5000, t0, seed=11)
    final = ticks(int(time.time() * 1000) - HOUR)
    config = CoreConfig(lateness_ms=10 * MINUTE, sources=KINDS)
    rules = rules_with_budgets(tmp_path / "reference-rules", 1e12)
    expected: set[str] = reference(messages + final, config, rules)[0].reference_ids  # type: ignore[attr-defined]
    assert len(expected) > 2000

    a, b = fleet(
        2,
        partitions=PARTITIONS,
        rules_dir=rules_with_budgets(tmp_path / "rules", 1e12),
        lateness_ms=10 * MINUTE,
    )
    a.start()
    b.start()
    settings = a.settings
    wait_until(lambda: assigned([a, b]) == list(range(PARTITIONS)), 60, "both workers assigned")

    async def send_and_kill() -> None:
        chunk = 1500
        killed = False
        for start in range(0, len(messages), chunk):
            await produce(settings, messages[start : start + chunk])
            await asyncio.sleep(0.3)
            if not killed and start >= len(messages) // 3:
                b.stop(signal.SIGKILL)  # mid-stream, with batches in flight
                killed = True
        assert killed

    asyncio.run(send_and_kill())
    time.sleep(2)
    b.start()
    wait_until(lambda: assigned([a, b]) == list(range(PARTITIONS)), 90, "rebalanced")
    asyncio.run(produce(settings, final))

    def distinct() -> set[str]:
        records = as_json(
            asyncio.run(
                consume(settings, "interventions", expect=len(expected), timeout=20, settle=0)
            )
        )
        distinct.records = records  # type: ignore[attr-defined]
        return {r["intervention_id"] for r in records}

    wait_until(lambda: distinct() >= expected, 240, f"{len(expected)} distinct interventions")
    time.sleep(3)
    got = distinct()
    assert got == expected
    by_id: dict[str, dict[str, Any]] = {}
    for record in distinct.records:  # type: ignore[attr-defined]
        record.pop("decided_at")
        first = by_id.setdefault(record["intervention_id"], record)
        assert first == record  # a duplicate is only ever an exact repeat
    assert a.running and b.running


def normalized(snapshot: bytes, delivered: int = 0) -> list[Any]:
    """A snapshot to compare: ``delivered``, the partition's last delivery published
    (its watermark record): outbox entries up to it went out, and a restore drops them."""
    snap = orjson.loads(snapshot)
    snap[5] = sorted(snap[5])  # seen ids: a set; the order of arrival does not matter
    snap[11] = [entry for entry in snap[11] if entry[2] > delivered]
    for _, command in snap[13]:  # deferred commands: decided_at is the deciding wall clock
        command.pop("decided_at")
    return snap


def latest_changelog(settings: Settings) -> tuple[dict[str, bytes], dict[int, int]]:
    """The last snapshot of each journey, and each partition's last delivery published."""

    async def read() -> tuple[dict[str, bytes], dict[int, int]]:
        consumer = AIOKafkaConsumer(
            changelog_topic(settings),
            bootstrap_servers=settings.bootstrap_servers,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        latest: dict[str, bytes] = {}
        delivered: dict[int, int] = {}
        try:
            idle = 0
            while idle < 3:
                batch = await consumer.getmany(timeout_ms=300)
                idle = 0 if batch else idle + 1
                for records in batch.values():
                    for r in records:
                        if r.key.startswith(b"\xff"):  # a partition's watermark record
                            delivered[r.partition] = orjson.loads(r.value)[3][1]
                            continue
                        if r.value is None:
                            latest.pop(r.key.decode(), None)
                        else:
                            latest[r.key.decode()] = r.value
        finally:
            await consumer.stop()
        return latest, delivered

    return asyncio.run(read())


def test_sigkill_during_a_lull_recovers_every_journey_exactly(
    fleet: Callable[..., list[Worker]], tmp_path: Path
) -> None:
    t0 = int(time.time() * 1000) - 3 * DAY
    messages, users, last = traffic(5000, t0, seed=23)
    extra: list[Message] = []
    for i, user in enumerate(users):
        body = {
            "event_id": f"extra-{i}",
            "type": "cart_view",
            "user_id": user,
            "ts": format_ts(last + SECOND),
        }
        extra.append(("cart", user.encode(), orjson.dumps(body), None))
    config = CoreConfig(lateness_ms=10 * MINUTE, idle_ms=HOUR, sources=KINDS)
    # Snapshots hold commands deferred by quiet hours, with context (prior stalls)
    # that depends on arrival order: compared exactly, the rules must hold none back,
    # whatever the hour of the run.
    rules = rules_with_budgets(tmp_path / "rules-any-hour", 1e12, any_hour=True)
    cores = reference(messages + extra, config, rules)
    want = {
        user: orjson.dumps(core.journeys[user].snapshot())
        for core in cores.values()
        for user in core.journeys
    }

    a, b = fleet(2, partitions=PARTITIONS, rules_dir=rules, lateness_ms=10 * MINUTE, idle_ms=HOUR)
    a.start()
    b.start()
    settings = a.settings
    wait_until(lambda: assigned([a, b]) == list(range(PARTITIONS)), 60, "both workers assigned")
    asyncio.run(produce(settings, messages))

    def consumed() -> float:
        return sum(w.metric("goldenflow_events_consumed_total") for w in (a, b))

    wait_until(lambda: consumed() >= len(messages), 180, "all events consumed")
    time.sleep(4)  # the lull: offsets committed (every second), changelogs written
    restart(b)  # SIGKILL, then start again: its partitions are recovered from the changelog
    wait_until(lambda: assigned([a, b]) == list(range(PARTITIONS)), 90, "rebalanced")
    asyncio.run(produce(settings, extra))

    extra_key = {user: event_key(f"extra-{i}") for i, user in enumerate(users)}

    def caught_up() -> bool:
        latest, _ = latest_changelog(settings)
        return all(
            u in latest and extra_key[u] in {k for k, _ in orjson.loads(latest[u])[5]}
            for u in users
        )

    wait_until(caught_up, 180, "every shopper's extra event checkpointed")
    time.sleep(1.5)  # the last publish's delivery: recorded by the next timer ticks
    latest, delivered = latest_changelog(settings)

    def got(user: str) -> list[Any]:
        return normalized(latest[user], delivered[partition_of(user.encode())])

    mismatched = [u for u in users if got(u) != normalized(want[u])]
    example = ""
    if mismatched:
        got_one, exp = got(mismatched[0]), normalized(want[mismatched[0]])
        example = "\n".join(
            f"[{i}] got {g!r}\n    want {w!r}"
            for i, (g, w) in enumerate(zip(got_one, exp, strict=True))
            if g != w
        )
    assert mismatched == [], f"{len(mismatched)} journeys differ, e.g. {example}"
