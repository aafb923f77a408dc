"""goldenflow generate: realistic, deterministic traffic with a known lift."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from stream.cli import main
from stream.decide.rulebook import RuleBook, load_rulebook
from stream.domain.events import decode
from stream.domain.timeutil import DAY, HOUR, parse_ts
from stream.generate import Plan, arrivals, write_file
from stream.replay.run import replay, write_outputs
from stream.report.outcomes import read_file
from stream.report.uplift import build_report
from tests.helpers import RULES

START = 1_764_028_800_000  # 2025-11-25T00:00:00Z


@pytest.fixture(scope="module")
def book() -> RuleBook:
    return load_rulebook(RULES)


def test_arrivals_follow_the_daily_rhythm_and_the_promotion_day() -> None:
    plan = Plan(shoppers=30_000, start_ms=START, days=3, promo_day=1)
    times = arrivals(plan)
    assert len(times) == 30_000 and times == sorted(times)
    by_day = Counter((t - START) // DAY for t in times)
    assert by_day[1] > 2.5 * by_day[0] and by_day[1] > 2.5 * by_day[2]  # the spike: 3x
    by_hour = Counter(((t - START) // HOUR) % 24 for t in times)
    assert by_hour[20] > 3 * by_hour[4]  # evening peak, night trough (UTC shop)
    shifted = Counter(
        ((t - START) // HOUR) % 24
        for t in arrivals(Plan(shoppers=30_000, start_ms=START, days=3, utc_offset_h=8))
    )
    assert shifted[12] > 3 * shifted[20]  # 20:00 in UTC+8 is 12:00 UTC


def test_the_same_seed_gives_the_same_log_every_event_valid(tmp_path: Path, book: RuleBook) -> None:
    plan = Plan(shoppers=300, start_ms=START, days=0.5, seed=7, malformed_share=0.05)
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl.gz"
    n = write_file(plan, book, one)
    write_file(plan, book, two)
    other = write_file(Plan(shoppers=300, start_ms=START, days=0.5, seed=8), book, tmp_path / "x")
    assert n > 300 * 3 and other > 0
    import gzip

    assert gzip.decompress(two.read_bytes()) == one.read_bytes()
    assert (tmp_path / "x").read_bytes() != one.read_bytes()
    lines = one.read_bytes().splitlines()
    valid, bad, last = 0, 0, 0
    for line in lines:
        try:
            ev = decode(line, None)
        except Exception:
            bad += 1
            continue
        valid += 1
        assert ev.ts >= last  # a log in event-time order
        last = ev.ts
    assert bad > 0 and valid > 10 * bad


def test_a_replay_of_the_generated_log_recovers_the_lift(tmp_path: Path, book: RuleBook) -> None:
    """The shoppers answered the commands the engine decided; the report of a replay of
    the log finds the configured lift inside its 95% interval, and excludes zero."""
    lift = 0.25
    log = tmp_path / "events.jsonl"
    write_file(Plan(shoppers=4000, start_ms=START, days=1, seed=3, lift=lift), book, log)
    files = write_outputs(replay(log, book), tmp_path / "out")
    report = build_report(read_file(files["outcomes"]), by="pattern", patterns=())
    [overall] = [g for g in report.groups if g.level == "all"]
    assert overall.uplift is not None
    assert overall.uplift.low <= lift <= overall.uplift.high, overall.uplift
    assert overall.uplift.low > 0


def test_cli_writes_a_log(tmp_path: Path) -> None:
    out = tmp_path / "g.jsonl"
    result = CliRunner().invoke(
        main, ["generate", "--out", str(out), "--shoppers", "50", "--days", "0.1", "--seed", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    first = orjson.loads(out.read_bytes().splitlines()[0])
    assert parse_ts(first["ts"]) >= parse_ts("2025-11-24T00:00:00Z")
    bad = CliRunner().invoke(main, ["generate", "--out", str(out), "--lift", "3"])
    assert bad.exit_code == 1 and "lift must be between" in bad.output
