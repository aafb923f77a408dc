"""Worker memory under a steady stream: RSS when ready, after N and after 5N events.

Runs a real worker process on the embedded broker (or a given cluster), feeds it
steady traffic from many returning shoppers spread over weeks of event time (so
the 7-day expiry horizon is exercised), and samples the worker's resident set
size when its consumed-events counter passes each checkpoint.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer

from stream.app.topics import ensure_topics
from stream.bench.common import rss_bytes, wait_for
from stream.bench.traffic import steady_events
from stream.broker import EmbeddedBroker, free_port
from stream.config import Settings
from stream.domain.timeutil import DAY


@dataclass
class MemoryResult:
    checkpoints: list[tuple[int, int, int]]  # (events consumed, worker RSS bytes, journeys)
    #: the worker's RSS once it was ready, before any event (what no journey costs)
    rss_ready: int
    events: int

    shoppers: int
    seconds: float

    def per_journey(self, rss: int, journeys: int) -> float | None:
        """What the worker grew by, per journey held, from its RSS when ready."""
        return (rss - self.rss_ready) / journeys if journeys > 0 else None


def metric(url: str, name: str) -> float:
    total = 0.0
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback only
        for line in resp.read().decode().splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
    return total


def run_memory(events: int, shoppers: int, checkpoints: list[int], workdir: Path) -> MemoryResult:
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with EmbeddedBroker(log_file=workdir / "broker.log") as broker:
        settings = Settings(
            broker_url=broker.url,
            profile="embedded",
            app_id="membench",
            topic_prefix="membench",
            web_port=free_port(),
            data_dir=workdir / "data",
        )
        asyncio.run(ensure_topics(settings))
        env = {
            **os.environ,
            "GOLDENFLOW_BROKER_URL": settings.broker_url,
            "GOLDENFLOW_PROFILE": "embedded",
            "GOLDENFLOW_APP_ID": settings.app_id,
            "GOLDENFLOW_TOPIC_PREFIX": settings.topic_prefix,
            "GOLDENFLOW_WEB_PORT": str(settings.web_port),
            "GOLDENFLOW_DATA_DIR": str(settings.data_dir),
            "GOLDENFLOW_LOG_LEVEL": "warning",
        }
        with open(workdir / "worker.log", "ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            url = f"http://127.0.0.1:{settings.web_port}/metrics"
            rss_ready = _wait_ready(worker, settings, workdir)
            start_ms = int(time.time() * 1000) - 40 * DAY
            asyncio.run(_produce(settings, steady_events(events, shoppers, start_ms)))
            samples = []
            for target in checkpoints:
                while True:
                    if worker.poll() is not None:
                        raise RuntimeError(f"worker exited; see {workdir / 'worker.log'}")
                    try:
                        done = metric(url, "goldenflow_events_consumed_total")
                    except OSError:
                        done = 0
                    if done >= target:
                        journeys = int(metric(url, "goldenflow_journeys"))
                        samples.append((int(done), rss_bytes(worker.pid), journeys))
                        break
                    time.sleep(0.2)
        finally:
            worker.terminate()
            worker.wait(30)
    return MemoryResult(samples, rss_ready, events, shoppers, time.monotonic() - started)


def _wait_ready(worker: subprocess.Popen[bytes], settings: Settings, workdir: Path) -> int:
    """Wait until the worker has its partitions (its /ready answers 200); its RSS then."""
    url = f"http://127.0.0.1:{settings.web_port}/ready"

    def ready() -> bool:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited; see {workdir / 'worker.log'}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    wait_for(ready, 120, "the worker ready", every=0.2)
    return rss_bytes(worker.pid)


async def _produce(settings: Settings, messages: object) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        pending = []
        for kind, key, value in messages:  # type: ignore[attr-defined]
            pending.append(await producer.send(settings.topic(kind), value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
