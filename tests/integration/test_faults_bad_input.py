"""Fault injection: fuzzed input mixed with valid traffic.

10,000 bad messages (``GOLDENFLOW_FAULTS=long``: 50,000), generated deterministically
with hypothesis strategies from a fixed seed: truncated JSON, wrong types, huge
values, deep nesting, invalid UTF-8 and lone surrogates, missing keys, unknown
types, events on the wrong topic, oversized messages, timestamps far in the past
or future, negative prices, NaN and infinities, time zones that are not zones,
tombstones. Each is classified in-process first (the code ``decode`` or the
future-time bound gives it), so the generator cannot slip a valid message in.

Through one real worker: every bad message comes back on the dead-letter topic
once, byte for byte, with its code and a reason; the valid traffic yields exactly
the interventions of an in-process run without the fuzz; the worker's memory and
state do not grow with bad input.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from stream.broker import EmbeddedBroker
from stream.config import Settings
from stream.decide.rulebook import RuleBook, load_rulebook
from stream.domain.engine import CoreConfig, PartitionCore, Record
from stream.domain.events import MAX_MESSAGE_BYTES, SCHEMA, TOPIC_KINDS, decode
from stream.domain.timeutil import DAY, HOUR, MIN_TS_MS, MINUTE, format_ts
from stream.errors import InvalidEvent
from tests.helpers import RULES, rules_with_budgets, wait_until
from tests.integration.conftest import Worker, as_json, consume, isolated_settings, produce
from tests.integration.test_recovery import (
    KINDS,
    PARTITIONS,
    Message,
    reference,
    ticks,
    traffic,
)

LONG = os.environ.get("GOLDENFLOW_FAULTS", "").strip().lower() == "long"
FUZZ = 50_000 if LONG else 10_000
SHOPPERS = 5_000 if LONG else 1_500
MAX_FUTURE_MS = DAY  # the worker's default GOLDENFLOW_MAX_FUTURE_MS
#: Largest event time a message may carry (9999-12-31T23:59:59.999Z).
MAX_TS_MS = 253_402_300_799_999
LATENESS_MS = 10 * MINUTE

# -- the fuzz --------------------------------------------------------------------------

TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=24
)
MONEY = st.one_of(st.integers(0, 10**6), st.floats(0, 1e6, allow_nan=False))
VALID = {
    "sku": TEXT,
    "category": st.sampled_from(["fresh_food", "books", "electronics.smartphone"]) | TEXT,
    "price": MONEY,
    "amount": MONEY,
    "qty": st.integers(1, 99),
    "checkout_id": TEXT,
    "order_id": TEXT,
    "method": TEXT,
    "reason": TEXT,
    "items": st.lists(st.fixed_dictionaries({"sku": TEXT}, optional={"price": MONEY}), max_size=3),
}
INT64 = st.integers(-(2**63), 2**63 - 1)
TEXT_FIELDS = {"event_id", "user_id", "sku", "category", "checkout_id", "order_id", "method"}
MONEY_FIELDS = {"price", "amount"}
NOT_TEXT = st.one_of(
    st.none(),
    st.booleans(),
    INT64,
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(INT64, max_size=3),
    st.dictionaries(TEXT, INT64, max_size=2),
)
NOT_NUMBER = st.one_of(
    st.none(), st.booleans(), TEXT, st.lists(MONEY, max_size=2), st.just({"value": 1})
)
#: Names no time zone database can load without an OS error: folders and over-long names.
NOT_ZONES = st.sampled_from(["America", "Etc", "Asia", "Europe", "Pacific"]) | st.builds(
    lambda n: "Z" * n, st.integers(256, 256)
)
PAST_TS = st.one_of(
    st.integers(-(2**63), MIN_TS_MS - 1),
    st.floats(-1e18, MIN_TS_MS - 1, allow_nan=False),
    st.integers(1_600_000_000, 1_900_000_000),  # seconds, not milliseconds
    st.sampled_from(["1999-12-31T23:59:59Z", "1970-01-01T00:00:00+00:00", "0001-01-01T00:00:00Z"]),
)
BAD_TS_TEXT = st.sampled_from(
    [
        "2025-11-24T16:00:00",  # no zone
        "2025-13-45T25:61:00Z",
        "yesterday",
        "",
        "2025-11-24T16:00:00Z" + "0" * 60,
        "2025-11-24 16:00:00 UTC",
    ]
)
BEYOND_TS = st.one_of(  # beyond year 9999: no date can show it
    st.integers(MAX_TS_MS + 1, 2**64 - 1), st.floats(MAX_TS_MS * 2, 1e300, allow_nan=False)
)


def base_event(draw: st.DrawFn, now_ms: int) -> tuple[str, dict[str, Any]]:
    type_ = draw(st.sampled_from(sorted(SCHEMA)))
    kind, required, optional = SCHEMA[type_]
    body: dict[str, Any] = {
        "event_id": "fz-" + draw(TEXT),
        "type": type_,
        "user_id": "fz-" + draw(TEXT),
        "ts": format_ts(now_ms - draw(st.integers(0, DAY))),
    }
    for name in required:
        body[name] = format_ts(now_ms + HOUR) if name == "pay_deadline" else draw(VALID[name])
    for name in optional:
        if name in VALID and draw(st.booleans()):
            body[name] = draw(VALID[name])
    return kind, body


def required_of(body: dict[str, Any]) -> list[str]:
    return ["event_id", "user_id", "ts", *SCHEMA[body["type"]][1]]


@st.composite
def bad_message(draw: st.DrawFn, now_ms: int) -> tuple[str, str, bytes | None]:
    """(mutation, topic kind, value) of one message that must be dead-lettered."""
    kind, body = base_event(draw, now_ms)
    how = draw(
        st.sampled_from(
            [
                "truncated",
                "wrong_type",
                "huge",
                "deep",
                "utf8",
                "missing",
                "unknown_type",
                "wrong_topic",
                "not_object",
                "oversized",
                "past",
                "future",
                "bad_ts_text",
                "negative",
                "nan",
                "zone",
                "tombstone",
            ]
        )
    )
    if how == "oversized" and draw(st.integers(0, 14)):  # a few: each is 256+ KB
        how = "truncated"
    raw: bytes | None = None
    if how == "truncated":
        whole = orjson.dumps(body)
        raw = whole[: draw(st.integers(0, len(whole) - 1))]
    elif how == "wrong_type":
        name = draw(st.sampled_from(required_of(body)))
        if name in TEXT_FIELDS:
            body[name] = draw(NOT_TEXT.filter(lambda v: not isinstance(v, str)))
        elif name in MONEY_FIELDS:
            body[name] = draw(NOT_NUMBER)
        elif name == "items":
            body[name] = draw(st.one_of(st.none(), TEXT, INT64, st.just({"sku": "x"})))
        else:  # ts, pay_deadline
            body[name] = draw(st.one_of(st.none(), st.booleans(), st.lists(INT64)))
    elif how == "huge":
        choice = draw(st.sampled_from(["money", "big_int", "qty", "text", "items"]))
        if choice in ("money", "big_int", "qty"):
            body = {**body, "type": "cart_add", "sku": "s", "category": "books", "price": 1.0}
            kind = "cart"
        if choice == "money":
            body["price"] = draw(st.floats(1e9 + 1, 1e308, allow_nan=False, allow_infinity=False))
        elif choice == "big_int":  # more digits than any 64-bit integer
            body["price"] = "__BIG__"
            digits = "9" * draw(st.integers(20, 400))
            raw = orjson.dumps(body).replace(b'"__BIG__"', digits.encode())
        elif choice == "qty":
            body["qty"] = draw(st.integers(10_001, 2**63 - 1))
        elif choice == "text":
            name = draw(st.sampled_from(["event_id", "user_id"]))
            body[name] = draw(st.sampled_from("xé字🛒")) * draw(st.integers(257, 20_000))
        else:
            body = {**body, "type": "checkout_start", "checkout_id": "c"}
            body["items"] = [{"sku": f"s{i}"} for i in range(draw(st.integers(501, 3_000)))]
            kind = "checkout"
    elif how == "deep":
        depth = draw(st.integers(2, 5_000))
        nested = b"[" * depth + b"]" * depth
        if depth > 1_024 or draw(st.booleans()):  # beyond the parser's depth: not JSON
            name = "user_id" if depth <= 1_024 else "extra"
        else:
            name = draw(st.sampled_from(["type", "event_id", "ts"]))
        body[name] = "__DEEP__"
        raw = orjson.dumps(body).replace(b'"__DEEP__"', nested)
    elif how == "utf8":
        bad = draw(
            st.sampled_from(
                [b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]
            )
        )
        body["user_id"] = "__UTF8__"
        if draw(st.booleans()):
            raw = orjson.dumps(body).replace(b"__UTF8__", b"fz" + bad)
        else:  # a lone surrogate, escaped
            raw = orjson.dumps(body).replace(b"__UTF8__", b"\\ud800")
    elif how == "missing":
        del body[draw(st.sampled_from([*required_of(body), "type"]))]
    elif how == "unknown_type":
        body["type"] = draw(
            st.one_of(
                TEXT.filter(lambda t: t not in SCHEMA),
                st.sampled_from(["cart_\u0430dd", "CART_ADD", "cart_add ", "order"]),
                INT64,
                st.lists(INT64, max_size=3),
            )
        )
    elif how == "wrong_topic":
        kind = draw(st.sampled_from([k for k in TOPIC_KINDS if k != kind]))
    elif how == "not_object":
        raw = orjson.dumps(draw(st.one_of(st.lists(INT64, max_size=3), TEXT, INT64, st.none())))
    elif how == "oversized":
        size = draw(st.integers(MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES + 150_000))
        body["padding"] = "p" * size
    elif how in ("past", "future", "bad_ts_text"):
        target = "ts"
        if body["type"] == "order_created" and draw(st.booleans()):
            target = "pay_deadline"
        if how == "past":
            body[target] = draw(PAST_TS)
        elif how == "bad_ts_text":
            body[target] = draw(BAD_TS_TEXT)
        elif target == "ts" and draw(st.booleans()):  # ahead of the clock, within year 9999
            body["ts"] = draw(st.integers(now_ms + MAX_FUTURE_MS + 30 * DAY, MAX_TS_MS))
        else:
            body[target] = draw(BEYOND_TS)
            if isinstance(body[target], int) and body[target] > 2**63 - 1:
                digits = str(body[target]).encode()
                body[target] = "__TS__"
                raw = orjson.dumps(body).replace(b'"__TS__"', digits)
    elif how == "negative":
        body = {**body, "type": "cart_add", "sku": "s", "category": "books"}
        kind = "cart"
        body["price"] = -draw(st.floats(1e-9, 1e9, allow_nan=False) | st.integers(1, 10**9))
    elif how == "nan":
        body = {**body, "type": "cart_add", "sku": "s", "category": "books", "price": "__NAN__"}
        kind = "cart"
        token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400"]))
        raw = orjson.dumps(body).replace(b'"__NAN__"', token)
    elif how == "zone":
        body["timezone"] = draw(NOT_ZONES)
    if how == "tombstone":
        return how, kind, None
    return how, kind, orjson.dumps(body) if raw is None else raw


def fuzz(count: int, now_ms: int) -> list[tuple[str, str, bytes | None]]:
    """``count`` bad messages, the same ones on every run (a fixed hypothesis seed)."""
    out: list[tuple[str, str, bytes | None]] = []
    per_example = 25

    @seed(20_251_124)
    @settings(
        max_examples=count // per_example + 10,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def draw(data: st.DataObject) -> None:
        # always the same number of draws: hypothesis checks that a run is repeatable
        out.extend(data.draw(bad_message(now_ms)) for _ in range(per_example))

    draw()
    assert len(out) >= count, f"drew {len(out)} of {count}"
    return out[:count]


def expected_code(kind: str, value: bytes | None, now_ms: int) -> str | None:
    """The dead-letter code a worker must give this message, or None if it is valid."""
    try:
        event = decode(value or b"", kind)
    except InvalidEvent as exc:
        return exc.code
    if event.ts > now_ms + MAX_FUTURE_MS:
        return "future_timestamp"
    return None


# -- in-process: the core itself ----------------------------------------------------------


@pytest.fixture(scope="module")
def fuzzed() -> tuple[int, list[tuple[str, str, bytes | None]]]:
    now = int(time.time() * 1000)
    return now, fuzz(FUZZ, now)


def test_every_fuzzed_message_is_bad_and_the_core_dead_letters_it(
    fuzzed: tuple[int, list[tuple[str, str, bytes | None]]],
) -> None:
    now, messages = fuzzed
    kinds = Counter(how for how, _, _ in messages)
    assert len(kinds) == 17 and min(kinds.values()) >= 10, kinds
    book = load_rulebook(RULES)
    core = PartitionCore(
        0, book.timing, book.decider, CoreConfig(lateness_ms=MINUTE), guardrails=book.guardrails
    )
    valid = [(how, v) for how, kind, v in messages if expected_code(kind, v, now) is None]
    assert valid == [], f"the generator made {len(valid)} valid messages, e.g. {valid[:1]!r}"
    records = [Record(kind, v or b"", None, kind, 0, i) for i, (_, kind, v) in enumerate(messages)]
    out = core.step(records, now_ms=now)
    assert len(out.dead_letters) == len(messages)
    assert [dl.code for dl in out.dead_letters] == [
        expected_code(kind, v, now) for _, kind, v in messages
    ]
    assert all(dl.reason for dl in out.dead_letters)
    assert max(len(dl.reason) for dl in out.dead_letters) < 1_000  # a sentence, not the input
    assert core.journeys == {} and out.commands == [] and core.take_dirty() == []


def weird_event(draw: st.DrawFn, now_ms: int) -> tuple[str, dict[str, Any]]:
    """An event of any type whose fields hold odd but well-typed values, or bad ones."""
    kind, body = base_event(draw, now_ms)
    body["user_id"] = draw(st.sampled_from(["u1", "u2", "ü"]))
    body["ts"] = draw(
        st.one_of(
            st.integers(now_ms - 3 * DAY, now_ms + DAY),
            st.sampled_from([MIN_TS_MS, MAX_TS_MS, 2**63 - 1, 2**64 - 1]),
            st.floats(MIN_TS_MS, 1e30, allow_nan=False),
        )
    )
    if body["type"] == "order_created":
        body["pay_deadline"] = draw(
            st.one_of(st.integers(MIN_TS_MS, 2**64 - 1), st.floats(MIN_TS_MS, 1e300))
        )
    for name in ("timezone", "segment"):
        if draw(st.booleans()):
            body[name] = draw(NOT_ZONES | st.sampled_from(["Asia/Shanghai", "Factory"]) | TEXT)
    return kind, body


@st.composite
def weird_batches(draw: st.DrawFn, now_ms: int) -> list[tuple[str, dict[str, Any]]]:
    return [weird_event(draw, now_ms) for _ in range(draw(st.integers(1, 20)))]


NOW = int(time.time() * 1000)


@lru_cache(maxsize=1)
def shipped_rules() -> RuleBook:
    return load_rulebook(RULES)


@settings(
    max_examples=2_000 if LONG else 300,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(weird_batches(NOW), st.integers(0, 30 * DAY))
def test_the_core_never_raises_on_well_formed_oddities(
    events: list[tuple[str, dict[str, Any]]], advance: int
) -> None:
    """Valid-looking events with edge values go through the whole core (decisions, quiet
    hours, budgets, snapshots, a restore) without an exception: each is processed or
    dead-lettered. Found here: a time zone naming a folder of the zone database, and a
    pay deadline beyond 64-bit milliseconds, crashed the core before the validator
    refused them."""
    book = shipped_rules()
    config = CoreConfig(lateness_ms=MINUTE)
    core = PartitionCore(0, book.timing, book.decider, config, guardrails=book.guardrails)
    records = [
        Record(kind, orjson.dumps(body), b"k", kind, 0, i) for i, (kind, body) in enumerate(events)
    ]
    out = core.step(records, now_ms=NOW)
    out.extend(core.advance(now_ms=NOW + advance, caught_up=True))
    for record in out.commands + out.outcomes:
        orjson.dumps(record)
    snapshots = [(user, snap) for user, snap in core.take_dirty() if snap is not None]
    again = PartitionCore(0, book.timing, book.decider, config, guardrails=book.guardrails)
    again.restore(snapshots)
    again.finish(NOW + 40 * DAY)


DEEP = b"[" * 1_000 + b"]" * 1_000


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("timezone", "America", "bad_value"),
        ("timezone", "Z" * 256, "bad_value"),
        ("pay_deadline", 1e20, "bad_timestamp"),
        ("pay_deadline", 2**64 - 1, "bad_timestamp"),
        ("type", DEEP, "unknown_type"),
        ("type", b"[" + b",".join([b"1"] * 60_000) + b"]", "unknown_type"),
    ],
    ids=[
        "zone_folder",
        "zone_too_long",
        "deadline_beyond_64_bits",
        "deadline_max_u64",
        "type_nested_1000_deep",
        "type_a_60000_item_list",
    ],
)
def test_messages_that_crashed_the_core_are_dead_lettered(
    field: str, value: Any, code: str
) -> None:
    """Each of these once raised out of the core (OSError from the zone database, a
    TypeError encoding the snapshot, RecursionError writing the reason) or made a
    dead-letter reason as long as the message."""
    now = int(time.time() * 1000)
    body: dict[str, Any] = {
        "event_id": "e1",
        "type": "order_created",
        "user_id": "u1",
        "ts": now - HOUR,
        "order_id": "o1",
        "items": [{"sku": "s1", "category": "books", "price": 20.0}],
        "amount": 20.0,
        "pay_deadline": now,
        "timezone": "UTC",
    }
    if isinstance(value, bytes):  # raw JSON no encoder would write
        body[field] = "__RAW__"
        raw = orjson.dumps(body).replace(b'"__RAW__"', value)
    else:
        raw = orjson.dumps({**body, field: value})
    book = load_rulebook(RULES)
    core = PartitionCore(
        0, book.timing, book.decider, CoreConfig(lateness_ms=MINUTE), guardrails=book.guardrails
    )
    out = core.step([Record("order", raw, b"u1", "order", 0, 0)], now_ms=now)
    out.extend(core.advance(now_ms=now + DAY, caught_up=True))
    core.take_dirty()
    assert [dl.code for dl in out.dead_letters] == [code]
    assert len(out.dead_letters[0].reason) < 1_000


# -- through a real worker -----------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def worker_pid(worker: Worker) -> int:
    """The worker's python process (the Popen child itself: no shell in between)."""
    assert worker.proc is not None
    return worker.proc.pid


def read_dlq(settings: Settings, expect: int, timeout: float) -> list[Any]:
    async def read() -> list[Any]:
        consumer = AIOKafkaConsumer(
            settings.topic("dlq"),
            bootstrap_servers=settings.bootstrap_servers,
            auto_offset_reset="earliest",
            group_id=None,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        await consumer.start()
        records: list[Any] = []
        try:
            deadline = time.monotonic() + timeout
            idle = 0
            while time.monotonic() < deadline and (len(records) < expect or idle < 3):
                batch = await consumer.getmany(timeout_ms=300)
                idle = 0 if batch else idle + 1
                for recs in batch.values():
                    records.extend(recs)
        finally:
            await consumer.stop()
        return records

    return asyncio.run(read())


def mixed(valid: list[Message], bad: list[Message], rng: random.Random) -> list[Message]:
    """The bad messages scattered at random among the valid ones, whose order is kept."""
    slots = sorted(rng.randrange(len(valid) + 1) for _ in bad)
    out: list[Message] = []
    b = iter(bad)
    j = 0
    for i, message in enumerate(valid):
        while j < len(slots) and slots[j] == i:
            out.append(next(b))
            j += 1
        out.append(message)
    out.extend(b)
    return out


@pytest.mark.integration
@pytest.mark.timeout(2400 if LONG else 600)
def test_fuzz_through_a_worker_is_dead_lettered_and_changes_nothing_else(
    broker: EmbeddedBroker,
    tmp_path: Path,
    fuzzed: tuple[int, list[tuple[str, str, bytes | None]]],
) -> None:
    now, fuzz_messages = fuzzed
    rng = random.Random(99)
    t0 = now - 3 * DAY
    valid, _, _ = traffic(SHOPPERS, t0, seed=31)
    final = ticks(now - HOUR)
    config = CoreConfig(lateness_ms=LATENESS_MS, sources=KINDS)
    expected: set[str] = reference(  # type: ignore[attr-defined]
        valid + final, config, rules_with_budgets(tmp_path / "r", 1e12)
    )[0].reference_ids
    assert len(expected) > SHOPPERS // 3

    bad: list[Message] = []
    want: Counter[tuple[bytes, str]] = Counter()
    for i, (_, kind, value) in enumerate(fuzz_messages):
        code = expected_code(kind, value, now)
        assert code is not None
        key = rng.choice([f"fz-{i}".encode(), None, bytes([rng.randrange(256)]) * 3])
        if value is None:  # a tombstone needs a key
            key = f"fz-{i}".encode()
        bad.append((kind, key, value, None))  # type: ignore[arg-type]
        want[(value or b"", code)] += 1

    rules = rules_with_budgets(tmp_path / "rules", 1e12)
    settings = isolated_settings(
        broker, rules_dir=rules, lateness_ms=LATENESS_MS, data_dir=tmp_path / "w0"
    )
    worker = Worker(settings, tmp_path / "worker.log").start()
    try:

        def ready() -> bool:
            return orjson.loads(worker.get("/health"))["partitions"] == list(range(PARTITIONS))

        wait_until(ready, 60, "the worker to own every partition")
        half = len(valid) // 2
        first, second = bad[: len(bad) // 2], bad[len(bad) // 2 :]

        def counted(name: str) -> Callable[[], float]:
            return lambda: worker.metric(name)

        dead = counted("goldenflow_dead_letters_total")
        consumed = counted("goldenflow_events_consumed_total")

        # 1. valid traffic with half of the fuzz scattered through it
        for chunk in batched(mixed(valid[:half], first, rng), 500):
            asyncio.run(produce(settings, chunk))
        wait_until(lambda: dead() >= len(first) and consumed() >= half, 180, "part 1 handled")
        time.sleep(2)
        rss_before = rss_kib(worker_pid(worker))
        journeys_before = worker.metric("goldenflow_journeys")
        deadlines_before = worker.metric("goldenflow_pending_deadlines")

        # 2. nothing but fuzz: neither memory nor state may grow
        for chunk in batched(second, 500):
            asyncio.run(produce(settings, chunk))
        wait_until(lambda: dead() >= len(bad), 180, "part 2 dead-lettered")
        time.sleep(2)
        rss_after = rss_kib(worker_pid(worker))
        assert worker.metric("goldenflow_journeys") == journeys_before
        assert worker.metric("goldenflow_pending_deadlines") == deadlines_before
        assert consumed() == half

        # 3. the rest of the valid traffic, then the clock ticks that fire every deadline
        for chunk in batched(valid[half:] + final, 500):
            asyncio.run(produce(settings, chunk))

        def interventions() -> set[str]:
            records = as_json(
                asyncio.run(
                    consume(settings, "interventions", expect=len(expected), timeout=20, settle=0)
                )
            )
            return {r["intervention_id"] for r in records}

        wait_until(lambda: interventions() >= expected, 240, f"{len(expected)} interventions")
        time.sleep(2)
        got = interventions()
        assert worker.running
        assert consumed() == len(valid) + len(final)

        records = read_dlq(settings, len(bad), 120)
        seen: Counter[tuple[bytes, str]] = Counter()
        for r in records:
            headers = dict(r.headers)
            assert headers["goldenflow.error.reason"], r
            seen[(r.value or b"", headers["goldenflow.error.code"].decode())] += 1
        lost = want - seen
        extra = seen - want
        by_code = Counter(code for (_, code) in want.elements())
        metric_codes = {
            code: worker.metric("goldenflow_invalid_events_total", reason=code) for code in by_code
        }
        print(
            "\nFAULTS bad input:",
            f"bad={len(bad)} valid={len(valid) + len(final)} dead_letters={len(records)}",
            f"lost={sum(lost.values())} extra={sum(extra.values())}",
            f"ids={len(got)} expected={len(expected)} id_losses={len(expected - got)}",
            f"rss_kib_before={rss_before} rss_kib_after={rss_after}",
            f"journeys={int(journeys_before)}",
            dict(sorted(Counter(how for how, _, _ in fuzz_messages).items())),
            dict(sorted(by_code.items())),
        )
        assert sum(lost.values()) == 0, f"{sum(lost.values())} bad messages not dead-lettered"
        assert sum(extra.values()) == 0, f"{sum(extra.values())} unexpected dead letters"
        assert metric_codes == {code: float(n) for code, n in by_code.items()}
        assert got == expected
        # bad input holds no memory: what 5,000 bad messages (some of 400 KB) leave behind
        # is allocator noise, not state
        assert rss_after - rss_before < 48 * 1024, (rss_before, rss_after)
    finally:
        worker.stop()


def batched(messages: list[Message], size: int) -> list[list[Message]]:
    return [messages[i : i + size] for i in range(0, len(messages), size)]
