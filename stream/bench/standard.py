"""``goldenflow bench``: the standard benchmark (docs/performance.md).

One run: start the embedded broker (or use a given cluster), create input topics
of their own, produce the generated events into them up front, then measure on
that same traffic, one after another:

- ``passthrough``: the raw limit, aiokafka consume -> orjson decode/encode ->
  produce (one ``send`` per message; ``send_batch`` per partition);
- ``faust``: a no-op faust agent, and a per-event faust table count;
- ``peers``: quix-streams and bytewax per-key counts, if installed;
- ``worker``: one goldenflow worker: start to first event, events/s, RSS per
  journey, then cancel->retention and deadline->command latency under load;
- ``replay``: the same events from a JSONL file through the core, no Kafka;
- ``decide``: durable-rules decisions per second over the facts of that replay.

The result is one JSON document (``figures`` holds every number, ``targets`` what
each is held against) and a table.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from stream.app.topics import ensure_topics
from stream.bench import peers as peers_module
from stream.bench.common import Throughput, create_topics, machine, run_peer
from stream.bench.offline import (
    decisions_per_second,
    multiplied,
    replay_figures,
    write_jsonl,
)
from stream.bench.passthrough import LINGER_MS, passthrough
from stream.bench.pipeline import LatencyOptions, run_pipeline
from stream.bench.traffic import steady_events
from stream.broker import EmbeddedBroker, free_port
from stream.config import Settings
from stream.decide.rulebook import load_rulebook
from stream.domain.facts import Fact
from stream.domain.timeutil import DAY, HOUR

SECTIONS = ("passthrough", "faust", "peers", "worker", "replay", "decide")

#: (figure, comparison, bound, what it is held against)
TARGETS: tuple[tuple[str, str, float, str], ...] = (
    ("ratio_worker_to_passthrough_send", ">=", 0.5, "full pipeline >= 50% of aiokafka send"),
    ("ratio_worker_to_faust_table", ">=", 5.0, "full pipeline >= 5x faust per-event table"),
    ("replay_events_per_s", ">=", 100_000, "replay >= 100,000 ev/s"),
    ("cancel_to_retention_p99_ms", "<=", 50.0, "cancel->retention p99 <= 50 ms"),
    ("deadline_to_command_p99_ms", "<=", 1_000.0, "deadline->command p99 <= 1 s"),
    ("rss_per_journey_bytes", "<=", 1_024.0, "<= 1 KB RSS per active journey"),
    ("worker_start_to_first_event_s", "<=", 10.0, "worker start -> first event <= 10 s"),
)

#: figures a run of every section always has (quix and bytewax only when installed)
REQUIRED_FIGURES = (
    "passthrough_send_events_per_s",
    "passthrough_send_batch_events_per_s",
    "faust_noop_events_per_s",
    "faust_table_events_per_s",
    "worker_events_per_s",
    "worker_start_to_first_event_s",
    "ratio_worker_to_passthrough_send",
    "ratio_worker_to_passthrough_send_batch",
    "ratio_worker_to_faust_noop",
    "ratio_worker_to_faust_table",
    "replay_events_per_s",
    "cancel_to_retention_p50_ms",
    "cancel_to_retention_p99_ms",
    "deadline_to_command_p50_ms",
    "deadline_to_command_p99_ms",
    "rss_per_journey_bytes",
    "decisions_per_s",
    "decisions_remembered_per_s",
)


def shares(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.0f}" for name, value in cpu.items())


@dataclass
class BenchOptions:
    events: int = 200_000
    shoppers: int = 10_000
    partitions: int = 8
    quick: bool = False
    broker_url: str | None = None
    profile: str | None = None
    rules_dir: Path = Path("rules")
    workdir: Path = Path(".bench")
    sections: tuple[str, ...] = SECTIONS
    latency_seconds: float = 30.0
    rate: float = 1_000.0
    #: linger of the latency phase's background producer (docs/performance.md, (e))
    feed_linger_ms: int = 50
    speed: float = 120.0
    quix_python: str | None = None
    #: runs of each peer measurement (passthrough, faust, quix, bytewax); the best counts
    repeat: int = 1
    #: replay (and the facts decided) on the first N events only (default: all)
    replay_events: int | None = None
    #: the JSON document is written here after every section, and at the end
    out: Path | None = None

    @classmethod
    def quick_run(cls, **overrides: Any) -> BenchOptions:
        """Tiny sizes for a smoke test of the harness (no quix-streams or bytewax)."""
        values: dict[str, Any] = {
            "events": 3_000,
            "shoppers": 500,
            "partitions": 2,
            "quick": True,
            "latency_seconds": 6.0,
            "rate": 500.0,
            "sections": tuple(s for s in SECTIONS if s != "peers"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class Bench:
    """One run of the standard benchmark; ``doc`` is its JSON document."""

    def __init__(self, opts: BenchOptions, say: Callable[[str], None]) -> None:
        self.opts = opts
        self.say = say
        self.tag = "bench" + uuid.uuid4().hex[:8]
        self.dir = opts.workdir / self.tag
        self.jsonl = self.dir / "events.jsonl"
        self.facts: list[Fact] = []
        self.figures: dict[str, float] = {}
        #: the embedded broker's process (None: a given cluster)
        self.broker_pid: int | None = None
        self.doc: dict[str, Any] = {
            "benchmark": "goldenflow bench",
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "params": {
                "run": self.tag,
                "events": opts.events,
                "shoppers": opts.shoppers,
                "partitions": opts.partitions,
                "quick": opts.quick,
                "sections": list(opts.sections),
                "broker": "embedded" if opts.broker_url is None else "given",
                "producer_linger_ms": LINGER_MS,
                "peer_runs": opts.repeat,
                "latency_background_rate": opts.rate,
                "latency_background_linger_ms": opts.feed_linger_ms,
                "latency_seconds": opts.latency_seconds,
                "latency_event_time_speed": opts.speed,
            },
            "figures": self.figures,
            "details": {},
            "peers": {},
            "errors": {},
        }

    # -- the run -------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)  # clean up on SIGTERM too
        try:
            with self._broker() as url:
                profile = self.opts.profile or (
                    "embedded" if self.opts.broker_url is None else "production"
                )
                self.settings = Settings(
                    broker_url=url,
                    profile=profile,
                    app_id=self.tag,
                    topic_prefix=self.tag,
                    partitions=self.opts.partitions,
                    rules_dir=self.opts.rules_dir,
                    web_port=free_port(),
                    data_dir=self.dir / "data",
                    log_level="warning",
                )
                self._prepare()
                for section in SECTIONS:
                    if section in self.opts.sections:
                        self._section(section)
                        self.doc["seconds"] = round(time.monotonic() - started, 1)
                        self._write()
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.jsonl.unlink(missing_ok=True)  # the events file is as large as the traffic
        self._ratios()
        self.doc["targets"] = evaluate_targets(self.figures)
        self.doc["seconds"] = round(time.monotonic() - started, 1)
        self._write()
        return self.doc

    @property
    def out(self) -> Path:
        return self.opts.out or self.dir / "bench.json"

    def _write(self) -> None:
        out = self.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(self.doc, option=orjson.OPT_INDENT_2) + b"\n")

    @contextlib.contextmanager
    def _broker(self) -> Iterator[str]:
        if self.opts.broker_url is not None:
            yield self.opts.broker_url
            return
        self.say("starting the embedded broker")
        with EmbeddedBroker(port=free_port(), log_file=self.dir / "broker.log") as broker:
            assert broker.process is not None
            self.broker_pid = broker.process.pid
            yield broker.url

    def _prepare(self) -> None:
        opts = self.opts
        asyncio.run(ensure_topics(self.settings))
        start_ms = int(time.time() * 1000) - 30 * DAY - HOUR
        self.events = list(steady_events(opts.events, opts.shoppers, start_ms, context=True))
        sizes = [len(value) for _, _, value in self.events]
        self.doc["params"]["event_bytes_mean"] = round(sum(sizes) / len(sizes), 1)
        self.say(f"producing {opts.events:,} events from {opts.shoppers:,} shoppers")
        produced = asyncio.run(produce(self.settings, self.events))
        self.doc["details"]["produce"] = produced.as_dict()
        replayed = self.events[: opts.replay_events] if opts.replay_events else self.events
        self.doc["params"]["replay_events"] = write_jsonl(
            self.jsonl, (value for _, _, value in replayed)
        )

    def _section(self, name: str) -> None:
        self.say(f"measuring: {name}")
        try:
            getattr(self, f"_run_{name}")()
        except Exception as exc:  # one section failing leaves the others' figures
            self.doc["errors"][name] = f"{type(exc).__name__}: {exc}"
            (self.dir / f"{name}.error.txt").write_text(traceback.format_exc())
            self.say(f"  {name} failed: {exc}")

    def _peer_timeout(self) -> float:
        return 120.0 + self.opts.events / 500

    def _out_topic(self, name: str) -> str:
        topic = self.settings.topic(f"out-{name}")
        asyncio.run(create_topics(self.settings, [topic]))
        return topic

    def _runs(self) -> range:
        return range(max(1, self.opts.repeat))

    def _run_passthrough(self) -> None:
        for mode in ("send", "send_batch"):
            out = self._out_topic(mode)
            self._record(
                f"passthrough_{mode}",
                *(
                    asyncio.run(passthrough(self.settings, out, self.opts.events, mode))
                    for _ in self._runs()
                ),
            )

    def _run_faust(self) -> None:
        for mode in ("noop", "table"):
            self._record(f"faust_{mode}", *(self._faust(mode, run) for run in self._runs()))

    def _faust(self, mode: str, run: int) -> Throughput:
        app_id = f"{self.tag}-faust-{mode}-{run}"
        cmd = [
            sys.executable,
            "-m",
            "stream.bench.faust_peers",
            mode,
            "--broker-url",
            self.settings.broker_url,
            "--profile",
            self.settings.profile,
            "--app-id",
            app_id,
            "--topic-prefix",
            self.settings.topic_prefix,
            "--partitions",
            str(self.settings.partitions),
            "--out-topic",
            self._out_topic(f"faust-{mode}"),
            "--expect",
            str(self.opts.events),
            "--result",
            str(self.dir / f"faust-{mode}.json"),
            "--data-dir",
            str(self.dir / f"faust-{mode}-{run}-data"),
        ]
        return run_peer(
            cmd,
            self.dir / f"faust-{mode}.json",
            self.dir / f"faust-{mode}.log",
            self._peer_timeout(),
        )

    def _run_peers(self) -> None:
        script = str(Path(peers_module.__file__).resolve())
        for name, python in (
            ("quix", self.opts.quix_python or sys.executable),
            ("bytewax", sys.executable),
        ):
            if not peer_available(python, script, name):
                hint = (
                    "pip install -e .[bench]"
                    if name == "bytewax"
                    else "quixstreams and orjson in a virtualenv given as --quix-python"
                )
                self.doc["peers"][name] = {"status": "not installed", "install": hint}
                self.say(f"  {name}: not installed ({hint})")
                continue
            results = []
            for run in self._runs():
                try:
                    results.append(self._peer(python, script, name, run))
                except (RuntimeError, TimeoutError) as exc:
                    self.doc["peers"][name] = {"status": f"failed: {exc}"}
                    self.say(f"  {name} failed: {exc}")
                    break
            else:
                self.doc["peers"][name] = {
                    "status": "measured",
                    "version": peer_version(python, name),
                }
                self._record(f"{name}_count", *results)

    def _peer(self, python: str, script: str, name: str, run: int) -> Throughput:
        cmd = [
            python,
            script,
            name,
            "--bootstrap",
            ",".join(self.settings.bootstrap_servers),
            "--topics",
            ",".join(self.settings.input_topics),
            "--out-topic",
            self._out_topic(name),
            "--group",
            f"{self.tag}-{name}-{run}",
            "--expect",
            str(self.opts.events),
            "--result",
            str(self.dir / f"{name}.json"),
            "--state-dir",
            str(self.dir / f"{name}-{run}-state"),
        ]
        return run_peer(
            cmd, self.dir / f"{name}.json", self.dir / f"{name}.log", self._peer_timeout()
        )

    def _run_worker(self) -> None:
        latency = LatencyOptions(
            seconds=self.opts.latency_seconds,
            rate=self.opts.rate,
            feed_linger_ms=self.opts.feed_linger_ms,
            speed=self.opts.speed,
            shoppers=self.opts.shoppers,
            warmup=2.0 if self.opts.quick else 3.0,
            max_drain=15.0 if self.opts.quick else 60.0,
        )
        result = run_pipeline(
            self.settings,
            self.opts.events,
            self.dir / "worker.log",
            latency,
            timeout=self._peer_timeout(),
            broker_pid=self.broker_pid,
        )
        self._record("worker", result.throughput)
        self.figures["worker_start_to_first_event_s"] = round(result.start_to_first_event_s, 2)
        per_journey = result.rss_per_journey
        if per_journey is not None and per_journey > 0:
            self.figures["rss_per_journey_bytes"] = round(per_journey, 1)
        self.doc["details"]["worker_memory"] = {
            "rss_before_first_event_mib": round(result.rss_before / 2**20, 1),
            "rss_after_last_event_mib": round(result.rss_after / 2**20, 1),
            "journeys": result.journeys,
        }
        self.doc["details"]["worker_cpu_percent"] = result.cpu
        # the work behind the events/s: facts decided while they were taken in
        self.doc["details"]["worker_decisions"] = {
            "decisions": result.decisions,
            "per_event": round(result.decisions / max(self.opts.events, 1), 3),
        }
        self.say(f"CPU, % of one core, while the worker took in the events: {shares(result.cpu)}")
        lat = result.latency
        self.doc["details"]["latency"] = lat
        if lat.get("cpu_percent"):
            self.say(f"CPU, % of one core, during the latency phase: {shares(lat['cpu_percent'])}")
        for key in (
            "cancel_to_retention_p50_ms",
            "cancel_to_retention_p99_ms",
            "deadline_to_command_p50_ms",
            "deadline_to_command_p99_ms",
            "deadline_probe_p50_ms",
            "deadline_probe_p99_ms",
        ):
            if lat.get(key) is not None and lat[key] > 0:
                self.figures[key] = lat[key]

    def _run_replay(self) -> None:
        book = load_rulebook(self.opts.rules_dir)
        figures, self.facts = replay_figures(self.jsonl, book)
        self.doc["details"]["replay"] = figures
        self.figures["replay_events_per_s"] = figures["events_per_s"]

    def _run_decide(self) -> None:
        book = load_rulebook(self.opts.rules_dir)
        facts = self.facts or replay_figures(self.jsonl, book)[1]
        seconds = 0.5 if self.opts.quick else 2.0
        # (g) is durable-rules deciding every fact; the decider as the core runs it
        # keeps the engine's answers by class of fact (stream/decide/matcher.py).
        scaling: dict[str, float] = {}
        remembered: dict[str, float] = {}
        for times in (1, 4):
            for remember, into in ((False, scaling), (True, remembered)):
                decider = multiplied(book, times, remember=remember).decider
                into[str(len(decider.rules))] = round(
                    decisions_per_second(decider, facts, seconds), 1
                )
        rules = str(len(book.decider.rules))
        self.figures["decisions_per_s"] = scaling[rules]
        self.figures["decisions_remembered_per_s"] = remembered[rules]
        self.doc["details"]["decide"] = {
            "facts": len(facts),
            "patterns": dict(Counter(f.pattern for f in facts).most_common()),
            "rules": len(book.decider.rules),
            "decisions_per_s_by_rule_count": scaling,
            "decisions_remembered_per_s_by_rule_count": remembered,
        }

    # -- figures -------------------------------------------------------------------

    def _record(self, name: str, *results: Throughput) -> None:
        """The best of the runs (the machine's noise only ever slows a run down)."""
        best = max(results, key=lambda r: r.per_second)
        self.figures[f"{name}_events_per_s"] = round(best.per_second, 1)
        self.doc["details"][name] = {
            **best.as_dict(),
            "runs_events_per_s": [round(r.per_second, 1) for r in results],
        }
        runs = ", ".join(f"{r.per_second:,.0f}" for r in results)
        self.say(
            f"  {name}: {best.per_second:,.0f} ev/s"
            + (f" (runs: {runs})" if len(results) > 1 else "")
        )

    def _ratios(self) -> None:
        worker = self.figures.get("worker_events_per_s")
        if not worker:
            return
        for peer in (
            "passthrough_send",
            "passthrough_send_batch",
            "faust_noop",
            "faust_table",
            "quix_count",
            "bytewax_count",
        ):
            value = self.figures.get(f"{peer}_events_per_s")
            if value:
                self.figures[f"ratio_worker_to_{peer}"] = round(worker / value, 3)


def evaluate_targets(figures: dict[str, float]) -> list[dict[str, Any]]:
    out = []
    for key, op, bound, text in TARGETS:
        value = figures.get(key)
        met: bool | None = None
        if value is not None:
            met = value >= bound if op == ">=" else value <= bound
        out.append({"figure": key, "target": text, "bound": bound, "value": value, "met": met})
    return out


async def produce(settings: Settings, events: list[tuple[str, bytes, bytes]]) -> Throughput:
    producer = AIOKafkaProducer(
        **settings.kafka_client_options(), linger_ms=LINGER_MS, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        first = time.time()
        pending = []
        for kind, key, value in events:
            pending.append(await producer.send(settings.topic(kind), value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return Throughput(len(events), first, time.time())
    finally:
        await producer.stop()


def peer_available(python: str, script: str, name: str) -> bool:
    if python == sys.executable:
        module = "quixstreams" if name == "quix" else "bytewax"
        if importlib.util.find_spec(module) is None:
            return False
    try:
        done = subprocess.run(
            [python, script, "check", "--which", name], check=False, capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def peer_version(python: str, name: str) -> str:
    dist = "quixstreams" if name == "quix" else "bytewax"
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    try:
        done = subprocess.run(
            [python, "-c", code], check=False, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


def run_bench(opts: BenchOptions, say: Callable[[str], None]) -> tuple[dict[str, Any], Path]:
    """Run the benchmark; return its document and the file it was written to."""
    bench = Bench(opts, say)
    return bench.run(), bench.out


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)
