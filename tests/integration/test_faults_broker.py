"""Fault injection: the broker goes down mid-stream and comes back.

The embedded broker keeps its data in S3 here (a local moto server), so a restart
keeps topics, offsets and the journeys' changelog, as a real cluster would. Two
workers on 8 partitions take generated traffic; mid-stream the broker is stopped
(SIGTERM in one round, SIGKILL in the next), stays down a few seconds and is
started again on the same port. The workers must not crash, must say so in their
logs and metrics, must reconnect by themselves, and once the stream drains the set
of intervention ids equals the in-process reference.

The outage (12 s) is longer than the idle time (5 s by default): a topic read up to
a high water that no broker has confirmed since must not count as quiet, or the
backlog that arrives after the restart would be dead-lettered as late
(``stream/app/fetch_health.py``).

``GOLDENFLOW_FAULTS=long`` runs more shoppers and four outages.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from stream.broker import EmbeddedBroker, free_port
from stream.config import Settings
from stream.domain.engine import CoreConfig
from stream.domain.timeutil import DAY, HOUR, MINUTE
from stream.errors import BrokerError
from tests.helpers import rules_with_budgets, wait_until
from tests.integration.conftest import (
    Worker,
    as_json,
    consume,
    consume_to_end,
    isolated_settings,
    produce,
)
from tests.integration.test_recovery import KINDS, PARTITIONS, assigned, reference, ticks, traffic

LONG = os.environ.get("GOLDENFLOW_FAULTS", "").strip().lower() == "long"
pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400 if LONG else 600)]
SHOPPERS = 6_000 if LONG else 1_500
OUTAGES = [signal.SIGTERM, signal.SIGKILL] * (2 if LONG else 1)
DOWN_SECONDS = 12.0
DEFAULT_IDLE_MS: int = Settings.model_fields["idle_ms"].default
LATENESS_MS = 10 * MINUTE
#: What a worker logs while it cannot reach the broker (aiokafka's words).
OUTAGE_LOG = re.compile(
    r"Unable connect to node|NodeNotReadyError|Unable to update metadata|Connect call failed"
)


@pytest.fixture
def s3_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """The embedded broker with S3 storage on a moto server, both on loopback."""
    try:
        import moto.server  # only checks it is there
    except ImportError:
        pytest.skip("moto[server] is not installed (make install adds it: the dev extra)")
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(tmp_path / "moto.log", "wb"),  # noqa: SIM115 - the child keeps it
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(endpoint + "/"), 60, "the moto server")
        bucket = "tansu-" + uuid.uuid4().hex[:8]
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"))
        env = {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
        }
        broker = EmbeddedBroker(
            storage=f"s3://{bucket}/", log_file=tmp_path / "broker.log", extra_env=env
        )
        try:
            broker.start()
        except BrokerError as exc:
            log = (tmp_path / "broker.log").read_text(errors="replace")[-1500:]
            pytest.skip(f"the embedded broker does not start on S3 storage here: {exc}\n{log}")
        yield broker
        broker.stop()
    finally:
        moto.terminate()
        moto.wait(10)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def last_offsets(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    async def read() -> dict[tuple[str, int], int]:
        consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=settings.bootstrap_servers,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await consumer.start()
        last: dict[tuple[str, int], int] = {}
        idle = 0
        try:
            while idle < 4:
                batch = await consumer.getmany(timeout_ms=500)
                idle = 0 if batch else idle + 1
                for tp, records in batch.items():
                    last[(tp.topic, tp.partition)] = records[-1].offset
        finally:
            await consumer.stop()
        return last

    return asyncio.run(read())


def diagnose(settings: Settings, workers: list[Worker], expected: set[str], got: set[str]) -> str:
    """What a worker has not read or processed, for a failure message."""
    stored = last_offsets(settings, [settings.topic(kind) for kind in KINDS])
    received: dict[tuple[str, int], float] = {}
    lines = [f"missing {len(expected - got)} of {len(expected)}"]
    for w in workers:
        lines.append(
            f"{w.log.name}: running={w.running} "
            f"consumed={w.metric('goldenflow_events_consumed_total')} "
            f"deadlines={w.metric('goldenflow_pending_deadlines')} "
            f"dead_letters={w.metric('goldenflow_dead_letters_total')} "
            f"duplicates={w.metric('goldenflow_duplicate_events_total')} "
            f"health={w.get('/health').decode()}"
        )
        text = w.log.read_text(errors="replace")
        if "Traceback" in text:  # the last one, whatever raised it
            lines.append(text[text.rindex("Traceback") - 300 :][:3000])
        for name, value in series(w).items():
            found = re.match(
                r'goldenflow_faust_messages_received_per_topics_partition\{partition="(\d+)",'
                r'topic="([^"]+)"\}',
                name,
            )
            if found:
                key = (found.group(2), int(found.group(1)))
                received[key] = max(received.get(key, -1), value)
    behind = {k: (v, received.get(k)) for k, v in stored.items() if received.get(k) != v}
    lines.append(f"partitions not read to the end (stored last, read last): {behind}")
    return "\n".join(lines)


def series(worker: Worker) -> dict[str, float]:
    """Every sample on the worker's /metrics, by its full line name."""
    out = {}
    for line in worker.get("/metrics").decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@dataclass
class Outcome:
    expected: set[str]
    got: set[str]
    late: int  # input events dead-lettered as late
    line: str  # the figures, printed


def run_outages(
    broker: EmbeddedBroker,
    tmp_path: Path,
    shoppers: int,
    outages: list[signal.Signals],
    down_seconds: float,
    idle_ms: int,
) -> Outcome:
    """Two workers, generated traffic, the broker stopped and restarted between chunks."""
    now = int(time.time() * 1000)
    messages, _, _ = traffic(shoppers, now - 3 * DAY, seed=61)
    final = ticks(now - HOUR)
    config = CoreConfig(lateness_ms=LATENESS_MS, sources=KINDS)
    expected: set[str] = reference(  # type: ignore[attr-defined]
        messages + final, config, rules_with_budgets(tmp_path / "ref-rules", 1e12)
    )[0].reference_ids
    assert len(expected) > shoppers // 3

    base = isolated_settings(
        broker,
        # Tansu on S3 storage reads each fetch from the object store: with the embedded
        # profile's 10 ms wait its fetches come back empty (stream/app/fetch_wait.py)
        fetch_wait_ms=1_500,
        partitions=PARTITIONS,
        lateness_ms=LATENESS_MS,
        idle_ms=idle_ms,
        rules_dir=rules_with_budgets(tmp_path / "rules", 1e12),
    )
    workers = [
        Worker(
            base.model_copy(update={"web_port": free_port(), "data_dir": tmp_path / f"w{i}"}),
            tmp_path / f"worker{i}.log",
        )
        for i in range(2)
    ]
    try:
        for w in workers:
            w.start()
        wait_until(lambda: assigned(workers) == list(range(PARTITIONS)), 90, "both assigned")
        chunks = [messages[i : i + 500] for i in range(0, len(messages), 500)]
        at = {len(chunks) * (k + 1) // (len(outages) + 1): sig for k, sig in enumerate(outages)}
        started = time.monotonic()
        outage_lines: list[int] = []
        changed: set[str] = set()
        for index, chunk in enumerate(chunks):
            asyncio.run(produce(base, chunk))
            sig = at.get(index)
            if sig is None:
                continue
            time.sleep(0.5)  # the workers are busy with the backlog
            logged = [len(w.log.read_text().splitlines()) for w in workers]
            if sig == signal.SIGKILL:
                broker.kill()
            else:
                broker.stop()
            time.sleep(2)  # what was fetched before the outage is handled by now
            early = [series(w) for w in workers]
            time.sleep(down_seconds - 2)
            for w, was in zip(workers, early, strict=True):  # alive, still serving pages
                assert w.running, w.log.read_text()[-3000:]
                late = series(w)
                assert late["goldenflow_broker_reachable"] == 0, w.log.name
                assert late["goldenflow_fetch_age_seconds"] >= 8, w.log.name
                changed |= {k for k in set(was) | set(late) if was.get(k) != late.get(k)}
            broker.start()  # the same port, the same bucket
            for w, skip in zip(workers, logged, strict=True):
                lines = w.log.read_text().splitlines()[skip:]
                outage_lines.append(sum(1 for line in lines if OUTAGE_LOG.search(line)))
        asyncio.run(produce(base, final))

        def distinct() -> set[str]:
            records = as_json(
                asyncio.run(
                    consume(base, "interventions", expect=len(expected), timeout=20, settle=0)
                )
            )
            distinct.records = len(records)  # type: ignore[attr-defined]
            return {r["intervention_id"] for r in records}

        progress = {"count": -1, "since": time.monotonic()}

        def drained() -> bool:
            """Every expected id is out, or (events were lost as late) no new id for 12 s."""
            ids = distinct()
            if ids >= expected:
                return True
            if len(ids) != progress["count"]:
                progress.update(count=len(ids), since=time.monotonic())
            return late_count(workers) > 0 and time.monotonic() - progress["since"] > 12

        try:
            wait_until(drained, 300, f"{len(expected)} interventions", every=2)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n{diagnose(base, workers, expected, distinct())}"
            ) from None
        time.sleep(5)  # anything still on its way
        got = distinct()
        late = late_count(workers)
        # every record the input topics hold, read to the high water of each partition
        # (a fixed number of empty polls can end before a restarted broker answers)
        inputs = sum(len(asyncio.run(consume_to_end(base, kind, timeout=120))) for kind in KINDS)
        # series that still move while the broker is down (an outage signal, if any);
        # the pages' own request counters move because this test reads them
        shown = sorted(
            {re.sub(r"\{.*", "", k) for k in changed if "goldenflow_faust_http_" not in k}
        )
        line = " ".join(
            [
                f"outages={len(outages)} ({', '.join(s.name for s in outages)})",
                f"down_seconds={down_seconds} events={len(messages) + len(final)}",
                f"inputs_kept={inputs} ids={len(got)} expected={len(expected)}",
                f"losses={len(expected - got)} extra={len(got - expected)} late={late}",
                f"records={distinct.records}",  # type: ignore[attr-defined]
                f"outage_log_lines={outage_lines}",
                f"seconds={round(time.monotonic() - started)}",
                f"\nseries moving while the broker is down: {shown}",
            ]
        )
        assert all(w.running for w in workers)
        assert all(n > 0 for n in outage_lines), "each worker logs each outage"
        for w in workers:
            text = w.log.read_text()
            assert text.count("brokers unreachable: no fetch response") == len(outages), text[
                -6000:
            ]
            assert text.count("brokers answering again after") == len(outages)
            assert w.metric("goldenflow_broker_outages_total") == len(outages)
            assert w.metric("goldenflow_broker_reachable") == 1
        assert inputs == len(messages) + len(final)  # the restarts kept every record
        if late == 0 and not expected <= got:
            raise AssertionError(diagnose(base, workers, expected, got))
        return Outcome(expected, got, late, line)
    finally:
        for w in workers:
            w.stop()


def late_count(workers: list[Worker]) -> int:
    return int(sum(w.metric("goldenflow_invalid_events_total", reason="late") for w in workers))


def test_broker_outages_mid_stream_lose_nothing(s3_broker: EmbeddedBroker, tmp_path: Path) -> None:
    """SIGTERM, then SIGKILL, each 12 s down (longer than the default idle time):
    nothing late, nothing lost, nothing extra."""
    out = run_outages(s3_broker, tmp_path, SHOPPERS, OUTAGES, DOWN_SECONDS, idle_ms=DEFAULT_IDLE_MS)
    print("\nFAULTS broker:", out.line)
    assert out.late == 0, f"{out.late} events dead-lettered as late after an outage"
    assert out.expected - out.got == set(), f"{len(out.expected - out.got)} interventions lost"
    assert out.got - out.expected == set()
