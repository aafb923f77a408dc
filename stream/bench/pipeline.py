"""One goldenflow worker under the benchmark: start-up, throughput, memory, latency.

The worker is a real ``goldenflow worker`` process, started the way the
integration tests start it, on input topics that already hold the benchmark's
events. Everything is read from outside: its ``/metrics`` (events processed,
journeys held, latency histograms), its resident set size from ``/proc``, and, for
the cancel-request latency, the interventions topic itself.

- start: from spawning the process to the first event processed (metrics polled
  every 50 ms);
- throughput: events processed between the first and the last metrics sample
  (a scrape costs the worker CPU: see :func:`sample_interval`);
- RSS per journey: RSS when done minus RSS just before the first event, divided by
  the journeys the worker holds (an upper bound: buffers and allocator slack count);
- latency, with background traffic at ``rate`` events/s whose event time runs
  ``speed`` times faster than the wall clock (so deadlines of minutes fall due
  within seconds): cancel request produced -> its retention command read back from
  the interventions topic by a consumer (probe shoppers, one order each), and
  deadline due -> command published from the worker's histogram
  ``goldenflow_deadline_to_command_seconds`` (its growth during the phase), also
  end to end by deadline probes (see :class:`Probes`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from stream.bench.common import (
    CpuShares,
    Samples,
    Throughput,
    bucket_delta,
    buckets,
    histogram_quantile,
    percentile,
    rss_bytes,
    scrape,
    stop,
    total,
)
from stream.bench.traffic import steady_events
from stream.config import Settings
from stream.domain.timeutil import HOUR, format_ts

PROCESSED = (
    "goldenflow_events_consumed_total",
    "goldenflow_invalid_events_total",
    "goldenflow_duplicate_events_total",
)
DEADLINE_HISTOGRAM = "goldenflow_deadline_to_command_seconds"
CANCEL_HISTOGRAM = "goldenflow_cancel_to_retention_seconds"


@dataclass
class LatencyOptions:
    seconds: float = 30.0
    rate: float = 1_000.0
    #: the background producer's linger: how the load reaches the broker (the probes
    #: are sent at once, whatever this is)
    feed_linger_ms: int = 50
    speed: float = 120.0
    probes_per_second: float = 5.0
    warmup: float = 3.0
    drain: float = 3.0
    max_drain: float = 60.0
    shoppers: int = 10_000


@dataclass
class PipelineResult:
    start_to_first_event_s: float
    throughput: Throughput
    rss_before: int
    rss_after: int
    journeys: int
    #: facts decided (any result but parked) by the time the last event was processed
    decisions: int = 0
    latency: dict[str, Any] = field(default_factory=dict)
    #: share of one core (%) per process while the worker took in the events
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rss_per_journey(self) -> float | None:
        if self.journeys <= 0:
            return None
        return (self.rss_after - self.rss_before) / self.journeys


def decided(samples: Samples) -> int:
    """Facts decided so far: every decision result but "parked" (a parked fact is
    decided when its claim comes back, and counted then)."""
    return int(
        sum(
            value
            for labels, value in samples.get("goldenflow_decisions_total", [])
            if labels.get("result") != "parked"
        )
    )


def processed(samples: Samples) -> float:
    return sum(total(samples, name) for name in PROCESSED)


class WorkerUnderTest:
    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://{settings.web_host}:{settings.web_port}/metrics"

    def start(self) -> float:
        s = self.settings
        env = {
            **os.environ,
            "GOLDENFLOW_BROKER_URL": s.broker_url,
            "GOLDENFLOW_PROFILE": s.profile,
            "GOLDENFLOW_APP_ID": s.app_id,
            "GOLDENFLOW_TOPIC_PREFIX": s.topic_prefix,
            "GOLDENFLOW_PARTITIONS": str(s.partitions),
            "GOLDENFLOW_RULES_DIR": str(s.rules_dir),
            "GOLDENFLOW_WEB_HOST": s.web_host,
            "GOLDENFLOW_WEB_PORT": str(s.web_port),
            "GOLDENFLOW_DATA_DIR": str(s.data_dir),
            "GOLDENFLOW_LOG_LEVEL": s.log_level,
        }
        started = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "worker"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return started

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def samples(self) -> Samples | None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"the worker exited; see {self.log}")
        try:
            return scrape(self.url, timeout=2.0)
        except OSError:
            return None

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout=30.0)


def run_pipeline(
    settings: Settings,
    expect: int,
    log: Path,
    latency: LatencyOptions | None,
    timeout: float,
    broker_pid: int | None = None,
) -> PipelineResult:
    """Start a worker on topics holding ``expect`` events; measure it; stop it.

    ``broker_pid``: the embedded broker's process, whose CPU share is reported beside
    the worker's and the bench's own."""
    worker = WorkerUnderTest(settings, log)
    spawned = worker.start()
    pids = {"worker": worker.pid, "bench": os.getpid()}
    if broker_pid is not None:
        pids["broker"] = broker_pid
    cpu = CpuShares(pids)
    try:
        deadline = spawned + timeout
        rss_before = 0
        first: tuple[float, float] | None = None
        start_to_first = 0.0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker processed no event in {timeout:.0f} s; see {log}")
            samples = worker.samples()
            now = time.monotonic()
            if samples is not None:
                done = processed(samples)
                if done > 0:
                    first = (now, done)
                    start_to_first = now - spawned
                    cpu.start()
                    break
                rss_before = rss_bytes(worker.pid)
            time.sleep(0.05)
        last = first
        while last[1] < expect:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the worker processed {last[1]:.0f} of {expect} events in {timeout:.0f} s"
                )
            time.sleep(sample_interval(first, last, expect))
            samples = worker.samples()
            if samples is not None:
                last = (time.monotonic(), processed(samples))
        shares = cpu.shares()
        rss_after = rss_bytes(worker.pid)
        journeys = int(total(samples or {}, "goldenflow_journeys"))
        decisions = decided(samples or {})
        result = PipelineResult(
            start_to_first_event_s=start_to_first,
            throughput=Throughput(int(last[1] - first[1]), first[0], last[0]),
            rss_before=rss_before,
            rss_after=rss_after,
            journeys=journeys,
            decisions=decisions,
            cpu=shares,
        )
        if latency is not None:
            settle(worker, settings)
            result.latency = asyncio.run(latency_phase(settings, worker, latency, cpu))
        return result
    finally:
        worker.stop()


def sample_interval(first: tuple[float, float], last: tuple[float, float], expect: int) -> float:
    """How long to wait before the next throughput sample, from (time, events) samples.

    Each sample is a scrape of the worker's /metrics, which costs it CPU: at most two a
    second while it works, but never past half the time it still needs at the rate so
    far (and every 50 ms at the end), so the last sample comes within ~50 ms of the
    last event, however short the run.
    """
    elapsed = last[0] - first[0]
    done = last[1] - first[1]
    if elapsed <= 0 or done <= 0:
        return 0.05
    left = (expect - last[1]) / (done / elapsed)
    return min(0.5, max(0.05, left / 2))


def settle(worker: WorkerUnderTest, settings: Settings, timeout: float = 60.0) -> None:
    """Wait until the worker is quiet: idle partitions follow the wall clock and fire
    what fell due, so the latency phase does not start inside that burst."""
    time.sleep(settings.idle_ms / 1000 + 1.0)
    names = ("goldenflow_decisions_total", "goldenflow_commands_emitted_total", *PROCESSED)
    before = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples = worker.samples()
        now = None if samples is None else tuple(total(samples, n) for n in names)
        if now is not None and now == before:
            return
        before = now
        time.sleep(1.0)


async def latency_phase(
    settings: Settings, worker: WorkerUnderTest, opts: LatencyOptions, cpu: CpuShares
) -> dict[str, Any]:
    tag = settings.app_id
    wall0 = time.time()
    start_ms = int(wall0 * 1000)
    span = opts.warmup + opts.seconds + opts.drain
    background = steady_events(
        max(1, int(opts.rate * span)),
        opts.shoppers,
        start_ms,
        span_ms=int(span * 1000 * opts.speed),
        seed=7,
        id_prefix=f"l{tag}-",
        context=True,
    )
    client = settings.kafka_client_options()
    producer = AIOKafkaProducer(**client, linger_ms=opts.feed_linger_ms)
    probe_producer = AIOKafkaProducer(**client, linger_ms=0)
    consumer = AIOKafkaConsumer(
        **client, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=5
    )
    await producer.start()
    await probe_producer.start()
    await consumer.start()
    probe = Probes(f"p{tag}-", wall0, start_ms, opts.speed, settings)
    stop_reading = asyncio.Event()
    try:
        out = settings.topic("interventions")
        tps = [TopicPartition(out, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the positions now, not at the first fetch
            await consumer.position(tp)
        reader = asyncio.create_task(_read_commands(consumer, probe, stop_reading))
        feeder = asyncio.create_task(_feed(producer, settings, background, opts.rate, wall0))
        await asyncio.sleep(opts.warmup)
        before = await asyncio.to_thread(worker.samples) or {}
        cpu.start()
        await probe.run(probe_producer, settings.topic("order"), opts)
        # Read on until no probe has been answered for `drain` seconds (a held-out
        # probe never is), so slow answers count too; at most `max_drain` seconds.
        waited = last_change = time.monotonic()
        answered = probe.answered()
        while time.monotonic() - last_change < opts.drain:
            if time.monotonic() - waited > opts.max_drain:
                break
            await asyncio.sleep(0.1)
            if probe.answered() != answered:
                answered, last_change = probe.answered(), time.monotonic()
        result_extra = {"drain_seconds": round(time.monotonic() - waited, 1)}
        after = await asyncio.to_thread(worker.samples) or {}
        shares = cpu.shares()
        stop_reading.set()
        background_sent = await feeder
        await reader
    finally:
        await consumer.stop()
        await probe_producer.stop()
        await producer.stop()
    result: dict[str, Any] = {
        "background_rate": opts.rate,
        "background_linger_ms": opts.feed_linger_ms,
        "background_events": background_sent,
        "event_time_speed": opts.speed,
        "seconds": opts.seconds,
        **result_extra,
        **probe.summary(),
        "cpu_percent": shares,
    }
    for name, key in (
        (DEADLINE_HISTOGRAM, "deadline_to_command"),
        (CANCEL_HISTOGRAM, "worker_cancel_to_retention"),
    ):
        result.update(histogram_figures(key, buckets(before, name), buckets(after, name)))
    return result


def histogram_figures(
    key: str, before: dict[float, float], after: dict[float, float]
) -> dict[str, Any]:
    """Count, p50 and p99 (ms) of what a histogram gained between two scrapes."""
    delta = bucket_delta(after, before)
    out: dict[str, Any] = {f"{key}_count": int(max(delta.values(), default=0.0))}
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        value = histogram_quantile(q, delta)
        if value is not None:
            out[f"{key}_{label}_ms"] = round(value * 1000, 1)
    return out


class Probes:
    """Probe shoppers, a few per second, on the order topic.

    Cancel probes: an order (amount 40: the points retention rule), and one probe
    later a cancel request for it; measured from producing the cancel request to
    reading its retention command. Deadline probes: an order whose pay deadline is
    the unpaid-order lead plus one minute of event time away, in a time zone where
    it is midday (push reminders wait out quiet hours); measured from the moment
    the event clock passes that due time plus the allowed lateness (when the
    partition's watermark can pass it) to reading the unpaid-order reminder.
    """

    def __init__(
        self, prefix: str, wall0: float, start_ms: int, speed: float, settings: Settings
    ) -> None:
        self.prefix = prefix
        self.wall0 = wall0
        self.start_ms = start_ms
        self.speed = speed
        self.lateness_ms = settings.lateness_ms
        self.lead_ms = UNPAID_LEAD_MS
        self.timezone = midday_zone()
        #: user -> wall time the cancel request was produced / the deadline became due
        self.expected: dict[str, dict[bytes, float]] = {"cancel": {}, "deadline": {}}
        #: user -> wall time its command was read
        self.seen: dict[str, dict[bytes, float]] = {"cancel": {}, "deadline": {}}

    def event_now_ms(self) -> int:
        """The background traffic's event clock (``speed`` times the wall clock)."""
        return self.start_ms + int((time.time() - self.wall0) * 1000 * self.speed)

    def wall_of(self, event_ms: int) -> float:
        return self.wall0 + (event_ms - self.start_ms) / 1000 / self.speed

    async def run(self, producer: AIOKafkaProducer, topic: str, opts: LatencyOptions) -> None:
        probes = max(1, int(opts.seconds * opts.probes_per_second))
        interval = opts.seconds / probes
        pending: list[Any] = []

        async def send(user: str, body: dict[str, Any]) -> None:
            pending.append(await producer.send(topic, orjson.dumps(body), key=user.encode()))

        for n in range(probes + 1):
            tick = time.monotonic()
            ts = self.event_now_ms()
            if n < probes:
                user = f"{self.prefix}c{n:05d}"
                await send(user, probe_order(user, ts, ts + 2 * HOUR))
                user = f"{self.prefix}d{n:05d}"
                due = ts + 60_000
                await send(user, probe_order(user, ts, due + self.lead_ms, self.timezone))
                self.expected["deadline"][user.encode()] = self.wall_of(due + self.lateness_ms)
            if n > 0:
                user = f"{self.prefix}c{n - 1:05d}"
                self.expected["cancel"][user.encode()] = time.time()
                await send(user, probe_cancel(user, ts))
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - tick)))
        await asyncio.gather(*pending)

    def note(self, key: bytes, value: bytes, now: float) -> None:
        """A command read from the interventions topic."""
        if not key.startswith(self.prefix.encode()):
            return
        kind = "cancel" if b'"cancel_request"' in value else "deadline"
        if key in self.expected[kind] and key not in self.seen[kind]:
            self.seen[kind][key] = now

    def answered(self) -> int:
        return sum(len(seen) for seen in self.seen.values())

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"deadline_probe_zone": self.timezone}
        for kind, name in (("cancel", "cancel_to_retention"), ("deadline", "deadline_probe")):
            expected, seen = self.expected[kind], self.seen[kind]
            latencies = [(seen[u] - t) * 1000 for u, t in expected.items() if u in seen]
            out[f"{kind}_probes"] = len(expected)
            out[f"{kind}_answered"] = len(latencies)
            if latencies:
                out[f"{name}_p50_ms"] = round(percentile(latencies, 0.50), 1)
                out[f"{name}_p99_ms"] = round(percentile(latencies, 0.99), 1)
                out[f"{name}_max_ms"] = round(max(latencies), 1)
        return out


#: timing.yaml's unpaid_order lead (the reminder goes out this long before the deadline)
UNPAID_LEAD_MS = 15 * 60_000


def midday_zone() -> str:
    """An IANA zone (Etc/GMT-N) where it is about midday now."""
    offset = (12 - datetime.now(UTC).hour) % 24
    if offset > 12:
        offset -= 24
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


def probe_order(
    user: str, ts: int, pay_deadline: int, timezone: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": f"{user}-order",
        "type": "order_created",
        "user_id": user,
        "ts": format_ts(ts),
        "order_id": f"{user}-order",
        "items": [{"sku": "k1", "category": "books", "price": 40.0, "qty": 1}],
        "amount": 40.0,
        "pay_deadline": format_ts(pay_deadline),
    }
    if timezone is not None:
        body["timezone"] = timezone
    return body


def probe_cancel(user: str, ts: int) -> dict[str, Any]:
    return {
        "event_id": f"{user}-cancel",
        "type": "order_cancel_requested",
        "user_id": user,
        "ts": format_ts(ts),
        "order_id": f"{user}-order",
        "reason": "changed_mind",
    }


async def _feed(
    producer: AIOKafkaProducer, settings: Settings, events: Any, rate: float, wall0: float
) -> int:
    """Send the background events at ``rate`` per second of wall clock."""
    sent = 0
    pending: list[Any] = []
    for kind, key, value in events:
        due = wall0 + sent / rate
        delay = due - time.time()
        if delay > 0.005:
            await asyncio.sleep(delay)
        pending.append(await producer.send(settings.topic(kind), value, key=key))
        sent += 1
        if len(pending) >= 1_000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    return sent


async def _read_commands(consumer: AIOKafkaConsumer, probe: Probes, done: asyncio.Event) -> None:
    """Note when each probe shopper's command becomes readable."""
    while not done.is_set():
        fetched = await consumer.getmany(timeout_ms=20)
        now = time.time()
        for records in fetched.values():
            for rec in records:
                probe.note(rec.key or b"", rec.value, now)
