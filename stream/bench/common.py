"""Small pieces the benchmark modules share: topics, metrics scraping, quantiles."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from prometheus_client.parser import text_string_to_metric_families

from stream.config import Settings


@dataclass(frozen=True)
class Throughput:
    """Events from the first to the last one processed, and the time between."""

    events: int
    first: float
    last: float

    @property
    def seconds(self) -> float:
        return max(self.last - self.first, 1e-9)

    @property
    def per_second(self) -> float:
        return self.events / self.seconds

    def as_dict(self) -> dict[str, float]:
        return {
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.per_second, 1),
        }


async def create_topics(settings: Settings, names: Iterable[str]) -> None:
    """Create topics with the settings' partitions and explicit retention configs."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        configs = {
            "retention.ms": str(settings.retention_ms),
            "retention.bytes": "-1",
            "cleanup.policy": "delete",
        }
        for name in names:
            if name in existing:
                continue
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            name=name,
                            num_partitions=settings.partitions,
                            replication_factor=settings.replication_factor,
                            topic_configs=configs,
                        )
                    ]
                )
    finally:
        await admin.close()


Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str, timeout: float = 5.0) -> Samples:
    """Every sample of a Prometheus text endpoint: name -> [(labels, value)]."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        text = resp.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def total(samples: Samples, name: str) -> float:
    return sum(value for _, value in samples.get(name, []))


def buckets(samples: Samples, name: str) -> dict[float, float]:
    """Cumulative counts of a histogram (summed over labels): upper bound -> count."""
    out: dict[float, float] = {}
    for labels, value in samples.get(name + "_bucket", []):
        le = float(labels["le"])
        out[le] = out.get(le, 0.0) + value
    return out


def bucket_delta(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


def histogram_quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile: linear inside the bucket holding the rank."""
    bounds = sorted(cumulative)
    if not bounds:
        return None
    count = cumulative[bounds[-1]]
    if count <= 0:
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for le in bounds:
        here = cumulative[le]
        if here >= rank:
            if math.isinf(le):
                return lower  # beyond the largest finite bound: report that bound
            inside = here - below
            return lower + (le - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = le, here
    return lower


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of a non-empty sequence."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuShares:
    """What share of one core each process used between :meth:`start` and
    :meth:`shares` (100 = one core busy all along): on a machine the broker, the
    worker and the bench share, this says who had the CPU."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self._at = 0.0

    def start(self) -> None:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._at = time.monotonic()

    def shares(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self._at, 1e-9)
        return {
            name: round(100 * (cpu_seconds(pid) - self._start[name]) / elapsed, 1)
            for name, pid in self.pids.items()
        }


def machine() -> dict[str, Any]:
    """What the figures were measured on, read now."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError, StopIteration):
        info["cpu_model"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def read_result(path: Path) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = orjson.loads(path.read_bytes())
        return found
    except (OSError, orjson.JSONDecodeError):
        return None


def run_peer(
    cmd: list[str],
    result: Path,
    log: Path,
    timeout: float,
    env: dict[str, str] | None = None,
) -> Throughput:
    """Run a peer process until it writes its result file; stop it; return its figures."""
    result.unlink(missing_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = read_result(result)
            if found is not None:
                return Throughput(int(found["count"]), found["first"], found["last"])
            if proc.poll() is not None:
                found = read_result(result)
                if found is not None:
                    return Throughput(int(found["count"]), found["first"], found["last"])
                raise RuntimeError(
                    f"{Path(cmd[1]).name if len(cmd) > 1 else cmd[0]} exited with code "
                    f"{proc.returncode} before its result; see {log}"
                )
            time.sleep(0.1)
        raise TimeoutError(f"no result after {timeout:.0f} s; see {log}")
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
    except ProcessLookupError:
        pass
