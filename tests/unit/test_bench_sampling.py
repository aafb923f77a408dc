"""The benchmark's throughput samples: few scrapes while the worker works, and the last
one close behind its last event, whatever the length of the run."""

from __future__ import annotations

import pytest

from stream.bench.pipeline import sample_interval


def measure(rate: float, expect: int, start_events: float = 50.0) -> tuple[float, int]:
    """A worker at a steady ``rate`` sampled the way the benchmark samples it: the
    events/s the samples give, and how many samples were taken."""
    first = (0.0, start_events)
    last = first
    samples = 1
    while last[1] < expect:
        now = last[0] + sample_interval(first, last, expect)
        last = (now, min(float(expect), start_events + rate * now))
        samples += 1
    return (last[1] - first[1]) / (last[0] - first[0]), samples


@pytest.mark.parametrize("expect", [2_000, 4_000, 8_000, 30_000, 200_000])
@pytest.mark.parametrize("rate", [3_000.0, 6_000.0, 12_000.0])
def test_a_steady_worker_is_measured_within_a_few_percent(rate: float, expect: int) -> None:
    measured, samples = measure(rate, expect)
    run_seconds = (expect - 50) / rate
    # the last sample lands at most 50 ms after the last event
    assert rate * run_seconds / (run_seconds + 0.05) <= measured <= rate
    # never more than two scrapes a second, plus the closing ones at 50 ms
    assert samples <= 2 * run_seconds + 12


def test_the_first_interval_is_short_until_there_is_a_rate() -> None:
    assert sample_interval((5.0, 100.0), (5.0, 100.0), 1_000) == 0.05
    assert sample_interval((5.0, 100.0), (6.0, 100.0), 1_000) == 0.05  # nothing done yet
    assert sample_interval((0.0, 0.0), (1.0, 1_000.0), 100_000) == 0.5
    assert sample_interval((0.0, 0.0), (1.0, 1_000.0), 1_400) == pytest.approx(0.2)
