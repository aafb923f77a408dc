"""Fixtures for tests against a real embedded Kafka-protocol broker (never a mock)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from stream.app.topics import ensure_topics
from stream.broker import EmbeddedBroker, free_port
from stream.config import Settings
from tests.helpers import RULES


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_file=log) as b:
        yield b


class Worker:
    """A real ``goldenflow worker`` process."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Worker:
        s = self.settings
        env = {
            **os.environ,
            "GOLDENFLOW_BROKER_URL": s.broker_url,
            "GOLDENFLOW_PROFILE": s.profile,
            "GOLDENFLOW_APP_ID": s.app_id,
            "GOLDENFLOW_TOPIC_PREFIX": s.topic_prefix,
            "GOLDENFLOW_RULES_DIR": str(s.rules_dir),
            "GOLDENFLOW_WEB_PORT": str(s.web_port),
            "GOLDENFLOW_DATA_DIR": str(s.data_dir),
            "GOLDENFLOW_LATENESS_MS": str(s.lateness_ms),
            "GOLDENFLOW_IDLE_MS": str(s.idle_ms),
            "GOLDENFLOW_HORIZON_MS": str(s.horizon_ms),
            "GOLDENFLOW_MAX_FUTURE_MS": str(s.max_future_ms),
            "GOLDENFLOW_PARTITIONS": str(s.partitions),
            "GOLDENFLOW_BATCH_MAX": str(s.batch_max),
            "GOLDENFLOW_BATCH_WITHIN_MS": str(s.batch_within_ms),
            "GOLDENFLOW_WEB_HOST": s.web_host,
            "GOLDENFLOW_STANDBY_REPLICAS": str(s.standby_replicas),
            "GOLDENFLOW_DRAIN": s.drain,
        }
        if s.fetch_wait_ms is not None:
            env["GOLDENFLOW_FETCH_WAIT_MS"] = str(s.fetch_wait_ms)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "worker"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"worker exited: {self.log.read_text()[-3000:]}"
            try:
                self.get("/health")
                return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"worker did not serve /health in {timeout}s")

    def get(self, path: str) -> bytes:
        url = f"http://{self.settings.web_host}:{self.settings.web_port}{path}"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read()  # type: ignore[no-any-return]

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of a metric on the worker's /metrics whose labels match."""
        total = 0.0
        for family in text_string_to_metric_families(self.get("/metrics").decode()):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    total += sample.value
        return total

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:  # leave no worker behind, then say so
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                raise
        return self.proc.returncode


def isolated_settings(broker: EmbeddedBroker, **overrides: Any) -> Settings:
    """Settings with topics of their own (created), so tests sharing the broker never collide."""
    name = "t" + uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "broker_url": broker.url,
        "profile": "embedded",
        "app_id": name,
        "topic_prefix": name,
        "rules_dir": RULES,
        "web_port": free_port(),
    }
    s = Settings(**{**values, **overrides})
    asyncio.run(ensure_topics(s))
    return s


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    return isolated_settings(broker, data_dir=tmp_path / "data")


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[Worker]:
    w = Worker(settings, tmp_path / "worker.log")
    yield w
    w.stop()


async def produce(
    settings: Settings, messages: list[tuple[str, bytes | None, bytes, int | None]]
) -> None:
    """Send (topic kind, key, value, partition) messages and wait for delivery."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(settings.topic(kind), value, key=key, partition=partition)
            for kind, key, value, partition in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def reader(settings: Settings, kind: str) -> AIOKafkaConsumer:
    """A started consumer of one of the settings' topics, from its beginning, no group."""
    consumer = AIOKafkaConsumer(
        settings.topic(kind),
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    return consumer


async def consume(
    settings: Settings, kind: str, *, expect: int, timeout: float, settle: float = 3.0
) -> list[Any]:
    """Read a topic from the start until ``expect`` records (then ``settle`` s more) or timeout."""
    consumer = await reader(settings, kind)
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            if settle_until is None and len(records) >= expect:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
    finally:
        await consumer.stop()
    return records


async def consume_to_end(settings: Settings, kind: str, *, timeout: float = 60.0) -> list[Any]:
    """Every record the topic holds: read from the start until every partition's
    position reaches the high water of a fetch response (right on every broker)."""
    consumer = await reader(settings, kind)
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            tps = consumer.assignment()
            if batch or not tps:
                continue
            behind = 0
            for tp in tps:
                end = consumer.highwater(tp)
                behind += 1 if end is None or await consumer.position(tp) < end else 0
            if not behind:
                return records
    finally:
        await consumer.stop()
    raise AssertionError(f"{settings.topic(kind)} not read to its end in {timeout} s")


def as_json(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


@pytest.fixture
def fleet(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Callable[..., list[Worker]]]:
    """``fleet(n, **settings)``: n workers (not started) on one set of topics of the
    shared broker, each with its own web port and data folder; all stopped at the end."""
    started: list[Worker] = []

    def make(count: int, **overrides: Any) -> list[Worker]:
        base = isolated_settings(broker, **overrides)
        workers = []
        for i in range(count):
            s = base.model_copy(update={"web_port": free_port(), "data_dir": tmp_path / f"w{i}"})
            workers.append(Worker(s, tmp_path / f"worker{i}.log"))
        started.extend(workers)
        return workers

    yield make
    for w in started:
        w.stop()
