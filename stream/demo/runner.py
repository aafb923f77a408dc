"""Run the demo: broker, worker process, traffic, live view, closing report, clean stop.

The traffic is a closed loop (stream.demo.traffic): every intervention command the
worker publishes is handed to the simulated shopper it names, who then converts
more often, by a known ``lift``. When the traffic stops the demo settles every
journey, moves event time past the longest attribution window so each decision's
outcome is known, and prints the uplift report from the outcomes topic next to the
configured lift.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from stream.app.topics import ensure_topics
from stream.broker import EmbeddedBroker, free_port
from stream.config import Settings
from stream.decide.rulebook import RuleBook, load_rulebook
from stream.demo.traffic import DEFAULT_LIFT, REACTION_MS, Emitted, ShopperSim, check_lift
from stream.domain.facts import PATTERNS
from stream.domain.timeutil import MINUTE, epoch_ms, format_ts
from stream.errors import GoldenflowError
from stream.report.outcomes import read_topic_async
from stream.report.render import print_text, report_document
from stream.report.uplift import Report, build_report

#: After the traffic stops, how long the worker gets to publish its last commands
#: (wall seconds; below the worker's idle time, so its watermark stays put).
SETTLE_S = 3.0
#: Longest wait for the worker to write every attribution after the closing jump.
REPORT_WAIT_S = 45.0


@dataclass(frozen=True)
class DemoOptions:
    duration: float | None
    speed: float
    rate: float
    seed: int
    rules_dir: Path
    workdir: Path
    #: what an intervention command adds to a shopper's chance of converting
    lift: float = DEFAULT_LIFT


@dataclass
class DemoStats:
    events_sent: int = 0
    malformed_sent: int = 0
    commands: int = 0
    dead_letters: int = 0
    closing_events: int = 0
    by_pattern: Counter[str] = None  # type: ignore[assignment]
    by_category: Counter[str] = None  # type: ignore[assignment]
    dlq_codes: Counter[str] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.by_pattern = Counter()
        self.by_category = Counter()
        self.dlq_codes = Counter()


def run_demo(opts: DemoOptions) -> int:
    console = Console()
    rulebook = load_rulebook(opts.rules_dir)  # refuse broken rules before starting anything
    try:
        check_lift(opts.lift)
    except ValueError as exc:
        raise GoldenflowError(str(exc)) from None
    opts.workdir.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(log_file=opts.workdir / "broker.log")
    worker: subprocess.Popen[bytes] | None = None
    stats = DemoStats()
    code = 0
    console.print(f"[bold]goldenflow demo[/] rules {rulebook.version} from {opts.rules_dir}")
    console.print(
        f"[yellow]event time runs {opts.speed:g}x faster than the wall clock[/]: "
        f"a 10-minute stall shows after {600 / opts.speed:.0f} s",
        soft_wrap=True,
    )
    console.print(
        f"shoppers respond to interventions: a command adds {opts.lift * 100:+.0f} points "
        "to their chance of converting; the control group gets none",
        soft_wrap=True,
    )
    try:
        broker.start()
        console.print(f"embedded broker on {broker.bootstrap}")
        settings = Settings(
            broker_url=broker.url,
            profile="embedded",
            rules_dir=opts.rules_dir,
            web_port=free_port(),
            data_dir=opts.workdir / "worker-data",
            # Sped-up event time: the skew between the four topics' deliveries grows
            # with the speed-up, so the allowed lateness does too.
            lateness_ms=max(30_000, int(opts.speed * 3_000)),
        )
        asyncio.run(ensure_topics(settings))
        worker = _start_worker(settings, opts.workdir / "worker.log")
        console.print(
            f"worker pid {worker.pid}, metrics on http://{settings.web_host}:{settings.web_port}"
            "/metrics (log: " + str(opts.workdir / "worker.log") + ")"
        )
        closed = asyncio.run(_drive(opts, settings, rulebook, stats, worker, console))
        if closed is not None:
            _closing_report(console, opts, *closed)
    except KeyboardInterrupt:
        pass
    except GoldenflowError as exc:
        console.print(f"[red]{exc}[/]")
        code = 1
    finally:
        if worker is not None:
            wcode = _stop(worker)
            if wcode not in (0, -signal.SIGTERM):
                console.print(f"[red]worker exited with {wcode}; see {opts.workdir}/worker.log[/]")
                code = code or 1
        broker.stop()
    _summary(console, stats)
    return code


def _start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GOLDENFLOW_BROKER_URL": settings.broker_url,
        "GOLDENFLOW_PROFILE": settings.profile,
        "GOLDENFLOW_RULES_DIR": str(settings.rules_dir),
        "GOLDENFLOW_WEB_PORT": str(settings.web_port),
        "GOLDENFLOW_DATA_DIR": str(settings.data_dir),
        "GOLDENFLOW_LATENESS_MS": str(settings.lateness_ms),
    }
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops the worker itself
        )


def _stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


@dataclass
class _Traffic:
    """What the producer and the consumer share: the simulator and the event clock."""

    sim: ShopperSim
    event0: int
    started: float
    speed: float
    sent_until: int  # event time of the last batch sent
    stopped: bool = False  # no more traffic: commands no longer count towards delays

    def now(self) -> int:
        return self.event0 + int((time.monotonic() - self.started) * self.speed * 1000)


def event_start(wall_ms: int, timezone: str = "UTC") -> int:
    """09:00 three days back, in the shops' default timezone: a 60x run spends its first
    12 minutes in daytime (no quiet hours hold commands back), and event time stays
    behind the clock even after the closing jump past the attribution windows (the
    worker refuses events more than a day ahead of it)."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    day = datetime.fromtimestamp(wall_ms / 1000, tz=zone) - timedelta(days=3)
    return epoch_ms(day.replace(hour=9, minute=0, second=0, microsecond=0))


async def _drive(
    opts: DemoOptions,
    settings: Settings,
    rulebook: RuleBook,
    stats: DemoStats,
    worker: subprocess.Popen[bytes],
    console: Console,
) -> tuple[Report, ShopperSim] | None:
    """Traffic and the live view until the duration or Ctrl-C, then the closing (a second
    Ctrl-C skips it). Returns the closing report and the simulator, or None."""
    stop, abort = _signals()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=10)
    consumer = AIOKafkaConsumer(
        settings.topic("interventions"),
        settings.topic("dlq"),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await producer.start()
    await consumer.start()
    recent: list[dict[str, Any]] = []
    event0 = event_start(int(time.time() * 1000), rulebook.guardrails.default_timezone)
    sim = ShopperSim(
        opts.seed, dict(rulebook.timing.cart_dwell_ms), lift=opts.lift, timing=rulebook.timing
    )
    traffic = _Traffic(sim, event0, time.monotonic(), opts.speed, event0)
    started = traffic.started
    producing = asyncio.create_task(_produce(opts, settings, traffic, producer, stats, stop))
    consuming = asyncio.create_task(_consume(consumer, settings, stats, recent, traffic))
    live = (
        Live(
            _view(stats, recent, event0, started, opts),
            console=console,
            refresh_per_second=4,
            transient=False,
        )
        if console.is_terminal
        else None
    )
    try:
        if live:
            live.start()
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if opts.duration is not None and elapsed >= opts.duration:
                break
            if worker.poll() is not None:
                raise GoldenflowError(f"the worker stopped unexpectedly (exit {worker.returncode})")
            if live:
                live.update(_view(stats, recent, event0, started, opts))
            await asyncio.sleep(0.25)
        stop.set()
        await producing  # the last batch is out: its event time is where traffic stopped
        if live:
            live.update(_view(stats, recent, event0, started, opts))
            live.stop()
            live = None
        report = await _unless(abort, _close(settings, rulebook, traffic, producer, stats, console))
        if report is None:
            console.print("closing skipped (Ctrl-C again): no report")
            return None
        return report, sim
    finally:
        stop.set()
        if live:
            live.stop()
        for task in (producing, consuming):
            task.cancel()
        await asyncio.gather(producing, consuming, return_exceptions=True)
        await producer.stop()
        await consumer.stop()


def _signals() -> tuple[asyncio.Event, asyncio.Event]:
    """Ctrl-C (or SIGTERM) sets the first event: stop the traffic and close; pressed
    again, the second: skip the closing."""
    stop, abort = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            abort.set()
        stop.set()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, on_signal)
    loop.add_signal_handler(signal.SIGTERM, on_signal)
    return stop, abort


async def _unless(abort: asyncio.Event, work: Coroutine[Any, Any, Report]) -> Report | None:
    """The result of ``work``, or None if ``abort`` is set first (``work`` is cancelled)."""
    task = asyncio.create_task(work)
    aborted = asyncio.create_task(abort.wait())
    await asyncio.wait({task, aborted}, return_when=asyncio.FIRST_COMPLETED)
    aborted.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None


async def _produce(
    opts: DemoOptions,
    settings: Settings,
    traffic: _Traffic,
    producer: AIOKafkaProducer,
    stats: DemoStats,
    stop: asyncio.Event,
) -> None:
    spawned = 0.0
    sim, event0 = traffic.sim, traffic.event0
    while not stop.is_set():
        elapsed = time.monotonic() - traffic.started
        now_event = event0 + int(elapsed * opts.speed * 1000)
        target = elapsed * opts.rate
        while spawned < target:
            sim.spawn(event0 + int(spawned / opts.rate * opts.speed * 1000))
            spawned += 1
        await _send(settings, producer, sim.due(now_event), stats)
        traffic.sent_until = now_event
        await asyncio.sleep(0.1)


async def _send(
    settings: Settings, producer: AIOKafkaProducer, events: list[Emitted], stats: DemoStats
) -> None:
    for kind, key, event in events:
        value = event if isinstance(event, bytes) else orjson.dumps(event)
        await producer.send(settings.topic(kind), value, key=key.encode())
        stats.events_sent += 1
        if isinstance(event, bytes):
            stats.malformed_sent += 1


async def _tick(
    settings: Settings, producer: AIOKafkaProducer, at_ms: int, stats: DemoStats
) -> None:
    """Move every partition's watermark to ``at_ms`` - lateness: one event per input topic
    and partition, of a clock user per partition, that no pattern reacts to."""
    for p in range(settings.partitions):
        user = f"clock-{p}"
        bodies = {
            "cart": {"type": "cart_view"},
            "checkout": {"type": "checkout_submit", "checkout_id": f"{user}-checkout"},
            "cashier": {"type": "payment_success", "order_id": f"{user}-order"},
            "order": {"type": "order_paid", "order_id": f"{user}-order"},
        }
        for kind, body in bodies.items():
            event = {"event_id": f"{user}-{kind}-{at_ms}", "user_id": user, "ts": format_ts(at_ms)}
            value = orjson.dumps({**event, **body})
            await producer.send(settings.topic(kind), value, key=user.encode(), partition=p)
            stats.events_sent += 1
    await producer.flush()


async def _close(
    settings: Settings,
    rulebook: RuleBook,
    traffic: _Traffic,
    producer: AIOKafkaProducer,
    stats: DemoStats,
    console: Console,
) -> Report:
    """Stop the traffic, settle every journey, let every attribution window close, and
    read the report from the outcomes topic."""
    stopped_at = traffic.sent_until
    traffic.stopped = True
    watermark = stopped_at - settings.lateness_ms
    await _tick(settings, producer, stopped_at, stats)
    console.print(
        f"closing: traffic stopped at {format_ts(stopped_at)} (event time); "
        f"{SETTLE_S:g} s for the worker's last commands (Ctrl-C again skips the closing)",
        soft_wrap=True,
    )
    await asyncio.sleep(SETTLE_S)
    closing = traffic.sim.close(stopped_at, watermark)
    await _send(settings, producer, closing, stats)
    stats.closing_events = len(closing)
    # Past the longest attribution window (and quiet hours' longest hold) of every
    # decision, but no further than the worker accepts (a day ahead of its clock).
    g = rulebook.guardrails
    longest = max(g.window(p) for p in PATTERNS) + g.max_defer_ms
    limit = int(time.time() * 1000) + settings.max_future_ms - 10 * MINUTE
    wanted = stopped_at + longest + settings.lateness_ms + 10 * MINUTE
    jump = max(stopped_at, min(wanted, limit))
    await _tick(settings, producer, jump, stats)
    console.print(
        f"closing: {len(closing)} events settle the open journeys (decision points due "
        f"are decided now, what could still fire ends); event time jumps to "
        f"{format_ts(jump)} "
        + (
            "so every attribution window closes"
            if jump == wanted
            else "(as far as the worker accepts): later windows stay open"
        ),
        soft_wrap=True,
    )
    return await _read_report(settings, settled=jump == wanted)


async def _read_report(settings: Settings, *, settled: bool) -> Report:
    """The report from the outcomes topic, once the worker has written it all.

    ``settled``: every attribution window closed, so the report is complete when no
    decision in an arm is open (each window's end reaches the worker after all of its
    events). Otherwise, once the topic stops growing. In any case after REPORT_WAIT_S."""
    deadline = time.monotonic() + REPORT_WAIT_S
    sizes: list[int] = []
    while True:
        await asyncio.sleep(1.5)
        outcomes = await read_topic_async(settings, idle_timeout=10)
        report = build_report(outcomes, by="rule")
        total = report.total
        sizes.append(outcomes.records)
        if settled and not total.treatment.open + total.control.open:
            return report
        if not settled and len(sizes) >= 4 and len(set(sizes[-4:])) == 1:
            return report
        if time.monotonic() > deadline:
            return report


async def _consume(
    consumer: AIOKafkaConsumer,
    settings: Settings,
    stats: DemoStats,
    recent: list[dict[str, Any]],
    traffic: _Traffic,
) -> None:
    dlq = settings.topic("dlq")
    console_plain = not Console().is_terminal
    while True:
        batches = await consumer.getmany(timeout_ms=200)
        for tp, records in batches.items():
            for rec in records:
                if tp.topic == dlq:
                    stats.dead_letters += 1
                    headers = dict(rec.headers or ())
                    stats.dlq_codes[headers.get("goldenflow.error.code", b"?").decode()] += 1
                    continue
                cmd = orjson.loads(rec.value)
                traffic.sim.on_command(cmd, None if traffic.stopped else traffic.now())
                stats.commands += 1
                stats.by_pattern[cmd["pattern"]] += 1
                stats.by_category[cmd.get("category") or "-"] += 1
                recent.append(cmd)
                del recent[:-12]
                if console_plain:
                    print(_line(cmd), flush=True)


def _closing_report(console: Console, opts: DemoOptions, report: Report, sim: ShopperSim) -> None:
    """Print the report, the configured lift next to the measured one, and how the
    shoppers really behaved; keep the report as JSON in the workdir."""
    console.print("\n[bold]report[/] (goldenflow report, on the outcomes topic)")
    print_text(report)
    path = opts.workdir / "report.json"
    path.write_bytes(orjson.dumps(report_document(report), option=orjson.OPT_INDENT_2))
    total = report.total
    t, c, uplift = total.treatment, total.control, total.uplift
    if uplift is None:
        console.print(
            f"lift: configured {_pp(opts.lift)}; measured: - (no decisions in both arms)",
            soft_wrap=True,
        )
        return
    inside = uplift.low <= opts.lift <= uplift.high
    interval = escape(f"[{_pp(uplift.low)}, {_pp(uplift.high)}]")
    console.print(
        f"[bold]lift: configured {_pp(opts.lift)}; measured {_pp(uplift.estimate)}, "
        f"95% interval {interval}[/] (treatment "
        f"{t.conversions:,}/{t.n:,} converted, control {c.conversions:,}/{c.n:,}): the "
        + (
            "configured lift is inside the interval"
            if inside
            else "configured lift is outside the interval (a 95% interval misses one run in "
            "twenty or so; try another --seed or a longer run)"
        ),
        soft_wrap=True,
    )
    truth = {True: [0, 0], False: [0, 0]}
    for by_command in sim.truth().values():
        for commanded, conv in by_command.items():
            truth[commanded][0] += conv.converted
            truth[commanded][1] += conv.points
    delays = sorted(sim.command_delays_ms)
    console.print(
        "shoppers at their decision points: "
        + ", ".join(
            f"{label} {k:,}/{n:,} converted ({k / n:.1%})" if n else f"{label} none"
            for label, (k, n) in (("with a command", truth[True]), ("without", truth[False]))
        )
        + f"; commands late for their shopper: {sim.late_commands:,}"
        + (
            f"; a command arrived {median(delays) / MINUTE:.1f} min (median), at most "
            f"{delays[-1] / MINUTE:.1f} min of event time after its pattern fired (decision "
            f"points come {REACTION_MS[0] // MINUTE}-{REACTION_MS[1] // MINUTE} min after)"
            if delays
            else ""
        ),
        soft_wrap=True,
    )
    console.print(f"report as JSON: {path}")


def _pp(value: float) -> str:
    return f"{value * 100:+.1f}pp"


def _line(cmd: dict[str, Any]) -> str:
    iv = cmd["intervention"]
    return (
        f"intervention {cmd['fired_at']} {cmd['user_id']} {cmd['pattern']} "
        f"{cmd.get('category')}/{cmd.get('sku')} cart={cmd.get('cart_value')} -> "
        f"{iv['type']} via {iv['channel']} ({cmd['rule']['id']})"
    )


def _view(
    stats: DemoStats, recent: list[dict[str, Any]], event0: int, started: float, opts: DemoOptions
) -> Table:
    elapsed = time.monotonic() - started
    clock = format_ts(event0 + int(elapsed * opts.speed * 1000))
    table = Table(
        title=(
            f"goldenflow demo: event clock {clock} ({opts.speed:g}x wall clock), "
            f"{elapsed:.0f}s elapsed. Events {stats.events_sent}, interventions "
            f"{stats.commands}, dead letters {stats.dead_letters}. Ctrl-C stops."
        ),
        expand=True,
    )
    for col in (
        "fired at (event time)",
        "shopper",
        "pattern",
        "item",
        "cart",
        "intervention",
        "rule",
    ):
        table.add_column(col)
    for cmd in reversed(recent):
        iv = cmd["intervention"]
        params = ", ".join(f"{k}={v}" for k, v in iv["params"].items())
        table.add_row(
            cmd["fired_at"],
            cmd["user_id"],
            cmd["pattern"],
            f"{cmd.get('category')} {cmd.get('sku')}",
            f"{cmd.get('cart_value')}",
            f"{iv['type']} ({params}) via {iv['channel']}",
            cmd["rule"]["id"],
        )
    return table


def _summary(console: Console, stats: DemoStats) -> None:
    console.print("\n[bold]summary[/]")
    console.print(
        f"events sent: {stats.events_sent} (malformed on purpose: {stats.malformed_sent}; "
        f"closing the journeys: {stats.closing_events})"
    )
    console.print(f"interventions: {stats.commands}")
    for pattern, n in sorted(stats.by_pattern.items()):
        console.print(f"  {pattern}: {n}")
    for cat, n in sorted(stats.by_category.items()):
        console.print(f"    {cat}: {n}")
    console.print(f"dead letters: {stats.dead_letters}")
    for code, n in sorted(stats.dlq_codes.items()):
        console.print(f"  {code}: {n}")
