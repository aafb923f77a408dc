"""``goldenflow bench --quick``: a smoke test of the benchmark harness (no timing asserts)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from stream.bench.common import histogram_quantile, percentile
from stream.bench.standard import REQUIRED_FIGURES, TARGETS
from tests.helpers import RULES

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "stream.cli"]


def test_quick_bench_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    done = subprocess.run(
        [
            *CLI,
            "bench",
            "--quick",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
            "--rules-dir",
            str(RULES),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = orjson.loads(out.read_bytes())
    assert doc["errors"] == {}, doc["errors"]
    figures = doc["figures"]
    for key in REQUIRED_FIGURES:
        assert key in figures, f"{key} missing; figures: {sorted(figures)}"
        value = figures[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (key, value)
    assert [t["figure"] for t in doc["targets"]] == [t[0] for t in TARGETS]
    assert all(t["met"] in (True, False) for t in doc["targets"])
    # who had the CPU while the worker took in the events, and during the latency phase
    details = doc["details"]
    for shares in (details["worker_cpu_percent"], details["latency"]["cpu_percent"]):
        assert set(shares) == {"worker", "broker", "bench"}, shares
        assert shares["worker"] > 0 and shares["broker"] > 0, shares
    machine = doc["machine"]
    assert machine["cores"] > 0 and machine["ram_bytes"] > 0 and machine["python"]
    # quix-streams and bytewax are not part of the quick run
    assert "quix_count_events_per_s" not in figures
    assert doc["params"]["quick"] is True
    assert "figures" in done.stdout and "targets" in done.stdout


def test_bench_memory_samples_the_worker_from_ready_to_the_end(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    done = subprocess.run(
        [
            *CLI,
            "bench",
            "memory",
            "--events",
            "3000",
            "--first",
            "1000",
            "--shoppers",
            "300",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    doc = orjson.loads(out.read_bytes())
    assert doc["rss_ready_mib"] > 0
    # the counter once past each mark (one batch may pass both)
    first, last = (s["events"] for s in doc["samples"])
    assert 1000 <= first <= last == 3000
    for sample in doc["samples"]:
        assert 0 < sample["journeys"] <= 300
        grown_mib = sample["rss_mib"] - doc["rss_ready_mib"]
        per = sample["rss_growth_per_journey_bytes"]
        # the same growth, per journey (both RSS figures are rounded to 0.1 MiB)
        assert abs(per * sample["journeys"] / 2**20 - grown_mib) <= 0.1
    assert "bytes of growth per journey" in done.stdout


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    cumulative = {0.01: 50.0, 0.1: 90.0, 1.0: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.5, cumulative) == pytest.approx(0.01)
    assert histogram_quantile(0.7, cumulative) == pytest.approx(0.055)
    assert histogram_quantile(0.99, cumulative) == pytest.approx(0.91)
    assert histogram_quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
