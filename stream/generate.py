"""``goldenflow generate``: synthetic but realistic traffic, to a file or to Kafka.

Shoppers (:class:`stream.demo.traffic.ShopperSim`) follow per-category funnel odds
and dwell times; they arrive with a daily rhythm (quiet at night, busiest in the
evening, in the shop's time zone) and a promotion-day spike; and they respond to
interventions with a known lift.

For a file, the shoppers' responses come from the engine itself: the generated
events go through the same core as a worker (the rule files given), in event
time, and each command it decides reaches its shopper before the shopper's
decision point — so the log is what a shop running goldenflow with those rules
would record, and a replay of it finds the lift. For Kafka, the commands are read
back from the interventions topic, as the demo does.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import click
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.progress import Progress, TextColumn, TimeElapsedColumn

from stream.cli_options import env_option, rules_option
from stream.config import Settings
from stream.decide.rulebook import RuleBook, load_rulebook
from stream.demo.traffic import ShopperSim, check_lift
from stream.domain.engine import CoreConfig, PartitionCore, Record
from stream.domain.timeutil import DAY, HOUR, MINUTE, SECOND, parse_ts
from stream.errors import GoldenflowError

#: Relative arrivals per local hour: night trough, lunch bump, evening peak.
HOURLY = tuple(
    0.25 + 0.75 * math.exp(-(((h - 20) % 24) ** 2) / 18) + 0.3 * math.exp(-((h - 12) ** 2) / 4)
    for h in range(24)
)


@dataclass(frozen=True)
class Plan:
    """What to generate."""

    shoppers: int
    start_ms: int
    days: float = 1.0
    seed: int = 1
    lift: float = 0.25
    #: 0-based day of the promotion spike (None: no promotion)
    promo_day: int | None = None
    promo_factor: float = 3.0
    #: the shop's UTC offset for the daily rhythm, in hours
    utc_offset_h: int = 0
    malformed_share: float = 0.0

    def weight(self, at_ms: int) -> float:
        local = at_ms + self.utc_offset_h * HOUR
        hour = (local // HOUR) % 24
        day = (at_ms - self.start_ms) // DAY
        spike = self.promo_factor if self.promo_day is not None and day == self.promo_day else 1.0
        return HOURLY[hour] * spike


def arrivals(plan: Plan) -> list[int]:
    """Arrival times of ``plan.shoppers`` shoppers over the span, following the rhythm."""
    rng = random.Random(plan.seed)  # noqa: S311 - traffic, not secrets
    span = int(plan.days * DAY)
    slots = max(1, span // MINUTE)
    weights = [plan.weight(plan.start_ms + i * MINUTE) for i in range(slots)]
    chosen = rng.choices(range(slots), weights=weights, k=plan.shoppers)
    return sorted(plan.start_ms + s * MINUTE + rng.randrange(MINUTE) for s in chosen)


def _sim(plan: Plan, book: RuleBook) -> ShopperSim:
    return ShopperSim(
        plan.seed,
        dict(book.timing.cart_dwell_ms),
        malformed_share=plan.malformed_share,
        lift=plan.lift,
        timing=book.timing,
    )


def events_with_engine(
    plan: Plan, book: RuleBook, *, on_progress: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """The generated log, event by event (JSON bytes), shoppers answering the commands
    the engine decides with ``book`` (event time only: deterministic for a seed)."""
    sim = _sim(plan, book)
    core = PartitionCore(
        0,
        book.timing,
        book.decider,
        CoreConfig(lateness_ms=SECOND, partitions=1),
        guardrails=book.guardrails,
    )
    pending = arrivals(plan)
    step = MINUTE
    clock = plan.start_ms
    i = 0
    while i < len(pending) or sim.scheduled:
        clock += step
        while i < len(pending) and pending[i] <= clock:
            sim.spawn(pending[i])
            i += 1
        batch = sim.due(clock)
        if not batch:
            continue
        raws = [p if isinstance(p, bytes) else orjson.dumps(p) for _, _, p in batch]
        out = core.step([Record(None, raw) for raw in raws], now_ms=None)
        core.delivered()
        core.take_dirty()
        for command in out.commands:
            sim.on_command(command, clock)
        yield from raws
        if on_progress is not None:
            on_progress(len(raws))


def write_file(
    plan: Plan, book: RuleBook, out: Path, *, on_progress: Callable[[int], None] | None = None
) -> int:
    """Write the log to ``out`` (.gz compresses); return the number of events."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    n = 0
    handle: IO[bytes] = (
        cast(IO[bytes], gzip.GzipFile(partial, "wb", mtime=0))
        if out.suffix == ".gz"
        else partial.open("wb")
    )
    with handle:
        for raw in events_with_engine(plan, book, on_progress=on_progress):
            handle.write(raw)
            handle.write(b"\n")
            n += 1
    partial.replace(out)
    return n


async def to_kafka(
    plan: Plan, book: RuleBook, settings: Settings, rate: float, duration_s: float
) -> dict[str, int]:
    """Produce live traffic at about ``rate`` events/s for ``duration_s`` seconds (event
    time = the clock), reading the interventions topic back so shoppers respond."""
    sim = _sim(plan, book)
    producer = AIOKafkaProducer(**settings.kafka_client_options(), linger_ms=10)
    consumer = AIOKafkaConsumer(
        settings.topic("interventions"),
        **settings.kafka_client_options(),
        group_id=None,
        auto_offset_reset="latest",
    )
    await producer.start()
    await consumer.start()
    stats = {"events": 0, "commands": 0, "shoppers": 0}
    rng = random.Random(plan.seed)  # noqa: S311 - traffic, not secrets

    async def read_commands() -> None:
        async for msg in consumer:
            try:
                command: dict[str, Any] = orjson.loads(msg.value or b"")
            except orjson.JSONDecodeError:
                continue
            if sim.on_command(command, int(time.time() * 1000)):
                stats["commands"] += 1

    reader = asyncio.create_task(read_commands())
    try:
        started = time.monotonic()
        per_shopper = 6.0  # events a visit sends, about
        while time.monotonic() - started < duration_s:
            now = int(time.time() * 1000)
            expected = rate / per_shopper * 0.1 * plan.weight(now) / max(HOURLY)
            for _ in range(int(expected) + (rng.random() < expected % 1)):
                sim.spawn(now)
                stats["shoppers"] += 1
            for kind, key, payload in sim.due(now):
                raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
                await producer.send(settings.topic(kind), raw, key=key.encode())
                stats["events"] += 1
            await asyncio.sleep(0.1)
        await producer.flush()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
    return stats


# -- the command ----------------------------------------------------------------------


@click.command("generate")
@env_option(
    "--out",
    "GOLDENFLOW_GENERATE_OUT",
    None,
    "write a JSONL log (.gz compresses) instead of producing to Kafka",
    type=click.Path(path_type=Path),
)
@env_option(
    "--shoppers",
    "GOLDENFLOW_GENERATE_SHOPPERS",
    10_000,
    "shoppers who arrive (file mode)",
    type=int,
)
@env_option(
    "--days",
    "GOLDENFLOW_GENERATE_DAYS",
    1.0,
    "event-time span of the arrivals (file mode)",
    type=float,
)
@env_option(
    "--start",
    "GOLDENFLOW_GENERATE_START",
    "2025-11-24T00:00:00Z",
    "event time of the first day",
    dest="start",
)
@env_option(
    "--seed",
    "GOLDENFLOW_GENERATE_SEED",
    1,
    "same seed and rules, same log",
    type=int,
)
@env_option(
    "--lift",
    "GOLDENFLOW_GENERATE_LIFT",
    0.25,
    "added conversion chance of a shopper who got a command",
    type=float,
)
@env_option(
    "--promo-day",
    "GOLDENFLOW_GENERATE_PROMO_DAY",
    None,
    "0-based day with a promotion spike (3x arrivals)",
    type=int,
)
@env_option(
    "--utc-offset",
    "GOLDENFLOW_GENERATE_UTC_OFFSET",
    0,
    "the shop's UTC offset in hours (daily rhythm)",
    type=int,
)
@env_option(
    "--malformed-share",
    "GOLDENFLOW_GENERATE_MALFORMED_SHARE",
    0.0,
    "share of visits that also send a malformed message",
    type=float,
)
@rules_option("rule files: timing for the shoppers, decisions for their responses")
@env_option(
    "--rate",
    "GOLDENFLOW_GENERATE_RATE",
    1000.0,
    "Kafka mode: events per second, about",
    type=float,
)
@env_option(
    "--duration",
    "GOLDENFLOW_GENERATE_DURATION",
    60.0,
    "Kafka mode: seconds to run",
    type=float,
)
@env_option(
    "--broker-url",
    "GOLDENFLOW_BROKER_URL",
    None,
    "Kafka mode: bootstrap servers",
)
@env_option(
    "--topic-prefix",
    "GOLDENFLOW_TOPIC_PREFIX",
    None,
    "Kafka mode: topics are <prefix>.cart, ...",
)
def generate_command(
    out: Path | None,
    shoppers: int,
    days: float,
    start: str,
    seed: int,
    lift: float,
    promo_day: int | None,
    utc_offset: int,
    malformed_share: float,
    rules_dir: Path,
    rate: float,
    duration: float,
    broker_url: str | None,
    topic_prefix: str | None,
) -> None:
    """Generate shopper traffic: a JSONL log with --out, else live to Kafka."""
    try:
        book = load_rulebook(rules_dir)
        plan = Plan(
            shoppers=shoppers,
            start_ms=parse_ts(start, "--start"),
            days=days,
            seed=seed,
            lift=lift,
            promo_day=promo_day,
            utc_offset_h=utc_offset,
            malformed_share=malformed_share,
        )
        check_lift(lift)
    except (GoldenflowError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if out is not None:
        started = time.perf_counter()
        with Progress(
            TextColumn("generate"),
            TextColumn("{task.completed:,} events"),
            TimeElapsedColumn(),
            transient=True,
        ) as progress:
            task = progress.add_task("generate", total=None)
            n = write_file(plan, book, out, on_progress=lambda k: progress.advance(task, k))
        seconds = time.perf_counter() - started
        click.echo(f"wrote {n:,} events from {shoppers:,} shoppers to {out} in {seconds:.1f} s")
        return
    settings = Settings()
    if broker_url:
        settings = settings.model_copy(update={"broker_url": broker_url})
    if topic_prefix:
        settings = settings.model_copy(update={"topic_prefix": topic_prefix})
    stats = asyncio.run(to_kafka(plan, book, settings, rate, duration))
    click.echo(
        f"produced {stats['events']:,} events from {stats['shoppers']:,} shoppers; "
        f"{stats['commands']:,} commands reached their shoppers"
    )
