"""Run the demo: broker, worker process, traffic, live view, summary, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from stream.app.topics import ensure_topics
from stream.broker import EmbeddedBroker, free_port
from stream.config import Settings
from stream.decide.rulebook import load_rulebook
from stream.demo.traffic import ShopperSim
from stream.domain.timeutil import DAY, format_ts
from stream.errors import GoldenflowError


@dataclass(frozen=True)
class DemoOptions:
    duration: float | None
    speed: float
    rate: float
    seed: int
    rules_dir: Path
    workdir: Path


@dataclass
class DemoStats:
    events_sent: int = 0
    malformed_sent: int = 0
    commands: int = 0
    dead_letters: int = 0
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
    opts.workdir.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(log_file=opts.workdir / "broker.log")
    worker: subprocess.Popen[bytes] | None = None
    stats = DemoStats()
    code = 0
    console.print(f"[bold]goldenflow demo[/] rules {rulebook.version} from {opts.rules_dir}")
    console.print(
        f"[yellow]event time runs {opts.speed:g}x faster than the wall clock[/]: "
        f"a 10-minute stall shows after {600 / opts.speed:.0f} s"
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
        asyncio.run(_drive(opts, settings, rulebook.timing.cart_dwell_ms, stats, worker, console))
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


async def _drive(
    opts: DemoOptions,
    settings: Settings,
    dwell_ms: Any,
    stats: DemoStats,
    worker: subprocess.Popen[bytes],
    console: Console,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
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
    started = time.monotonic()
    wall0 = time.time() * 1000
    event0 = int(wall0) - DAY  # starts a day back so sped-up time stays behind the clock
    sim = ShopperSim(opts.seed, dict(dwell_ms))
    tasks = [
        asyncio.create_task(_produce(opts, settings, sim, producer, stats, stop, started, event0)),
        asyncio.create_task(_consume(consumer, settings, stats, recent, stop)),
    ]
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
    finally:
        stop.set()
        if live:
            live.update(_view(stats, recent, event0, started, opts))
            live.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
        await consumer.stop()


async def _produce(
    opts: DemoOptions,
    settings: Settings,
    sim: ShopperSim,
    producer: AIOKafkaProducer,
    stats: DemoStats,
    stop: asyncio.Event,
    started: float,
    event0: int,
) -> None:
    spawned = 0.0
    while not stop.is_set():
        elapsed = time.monotonic() - started
        now_event = event0 + int(elapsed * opts.speed * 1000)
        target = elapsed * opts.rate
        while spawned < target:
            sim.spawn(event0 + int(spawned / opts.rate * opts.speed * 1000))
            spawned += 1
        for kind, key, event in sim.due(now_event):
            value = event if isinstance(event, bytes) else orjson.dumps(event)
            await producer.send(settings.topic(kind), value, key=key.encode())
            stats.events_sent += 1
            if isinstance(event, bytes):
                stats.malformed_sent += 1
        await asyncio.sleep(0.1)


async def _consume(
    consumer: AIOKafkaConsumer,
    settings: Settings,
    stats: DemoStats,
    recent: list[dict[str, Any]],
    stop: asyncio.Event,
) -> None:
    dlq = settings.topic("dlq")
    console_plain = not Console().is_terminal
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=200)
        for tp, records in batches.items():
            for rec in records:
                if tp.topic == dlq:
                    stats.dead_letters += 1
                    headers = dict(rec.headers or ())
                    stats.dlq_codes[headers.get("goldenflow.error.code", b"?").decode()] += 1
                    continue
                cmd = orjson.loads(rec.value)
                stats.commands += 1
                stats.by_pattern[cmd["pattern"]] += 1
                stats.by_category[cmd.get("category") or "-"] += 1
                recent.append(cmd)
                del recent[:-12]
                if console_plain:
                    print(_line(cmd), flush=True)


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
        f"events sent: {stats.events_sent} (malformed on purpose: {stats.malformed_sent})"
    )
    console.print(f"interventions: {stats.commands}")
    for pattern, n in sorted(stats.by_pattern.items()):
        console.print(f"  {pattern}: {n}")
    for cat, n in sorted(stats.by_category.items()):
        console.print(f"    {cat}: {n}")
    console.print(f"dead letters: {stats.dead_letters}")
    for code, n in sorted(stats.dlq_codes.items()):
        console.print(f"  {code}: {n}")
