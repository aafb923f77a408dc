"""Replay: the workers' core over a recorded log, offline and deterministic."""

from __future__ import annotations

import csv
import gzip
import shutil
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
import yaml
from click.testing import CliRunner

from stream.cli import main
from stream.decide.rulebook import load_rulebook
from stream.domain.timeutil import HOUR, MINUTE
from stream.generate import Plan, write_file
from stream.importers.common import Stats, write_events
from stream.importers.taobao import read as read_taobao
from stream.replay.compare import compare
from stream.replay.run import ReplayError, replay, write_outputs
from tests.helpers import REPO, RULES, T0, EventMaker

SHARED = REPO.parent / "shared" / "data"
TAOBAO_SLICE = SHARED / "taobao" / "UserBehavior_part.csv"
TAOBAO_EXCERPT = REPO / "tests" / "data" / "taobao_UserBehavior_excerpt.csv"
BEIJING = timezone(timedelta(hours=8))
FIRST_S = int(datetime(2017, 11, 25, tzinfo=BEIJING).timestamp())
END_S = int(datetime(2017, 12, 4, tzinfo=BEIJING).timestamp())


def rules_with_dwell(dest: Path, default: str, **by_category: str) -> Path:
    """A copy of the shipped rules with another cart dwell (default and per category)."""
    shutil.copytree(RULES, dest)
    timing = dest / "timing.yaml"
    data = yaml.safe_load(timing.read_text())
    data["cart_stall"]["default_dwell"] = default
    data["cart_stall"]["dwell"].update(by_category)
    timing.write_text(yaml.safe_dump(data))
    return dest


def import_taobao(src: Path, out: Path) -> Path:
    stats = Stats("taobao")
    write_events(read_taobao([src], stats), out, stats)
    return out


def generated_log(path: Path) -> Path:
    """A small log of every kind of journey, plus a malformed line and a duplicate."""
    ev = EventMaker()
    lines: list[bytes] = []
    for i in range(60):
        user = f"u{i}"
        t = T0 + i * MINUTE
        category = ("fresh_food", "books", "electronics.phone")[i % 3]
        add = ev.add(user, t, sku=f"s{i}", category=category, price=20.0 + i)
        lines.append(orjson.dumps(add))
        if i % 4 == 0:  # buys it later: the stall (if any) converts
            item = {"sku": f"s{i}", "category": category, "price": 20.0 + i, "qty": 1}
            lines.append(
                orjson.dumps(
                    ev(
                        "order_created",
                        user,
                        t + 3 * HOUR,
                        order_id=f"o{i}",
                        items=[item],
                        amount=20.0 + i,
                        pay_deadline=t + 4 * HOUR,
                    )
                )
            )
            lines.append(
                orjson.dumps(ev("order_paid", user, t + 3 * HOUR + MINUTE, order_id=f"o{i}"))
            )
    lines.sort(key=lambda line: orjson.loads(line)["ts"])  # a log in event-time order
    lines.append(lines[0])  # a duplicate
    lines.append(b'{"event_id": "broken", "type": "cart_add"')  # truncated
    lines.append(orjson.dumps(ev("cart_view", "clock", T0 + 2 * 24 * HOUR)))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_two_replays_of_a_log_are_byte_identical(tmp_path: Path) -> None:
    log = generated_log(tmp_path / "events.jsonl")
    first = write_outputs(replay(log, RULES), tmp_path / "one")
    second = write_outputs(replay(log, RULES), tmp_path / "two")
    for name, path in first.items():
        assert path.read_bytes() == second[name].read_bytes(), name
    summary = orjson.loads(first["summary"].read_bytes())
    assert summary["duplicates"] == 1
    assert summary["dead_letters"] == {"not_json": 1}
    assert summary["patterns"]["cart_stall"] > 0
    assert summary["commands"]["cart_stall"] > 0
    # the outcomes join the commands: every command has its treatment decision record
    outcomes = [orjson.loads(x) for x in first["outcomes"].read_bytes().splitlines()]
    commands = [orjson.loads(x) for x in first["interventions"].read_bytes().splitlines()]
    treated = {o["id"] for o in outcomes if o["kind"] == "decision" and o["arm"] == "treatment"}
    assert {c["intervention_id"] for c in commands} <= treated
    assert any(o["kind"] == "attribution" and o["result"] == "converted" for o in outcomes)


def test_a_gzipped_log_replays_like_the_plain_one(tmp_path: Path) -> None:
    log = generated_log(tmp_path / "events.jsonl")
    packed = tmp_path / "events.jsonl.gz"
    packed.write_bytes(gzip.compress(log.read_bytes()))
    assert replay(packed, RULES).outcomes == replay(log, RULES).outcomes


def test_a_missing_or_broken_log_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="no event log"):
        replay(tmp_path / "nope.jsonl", RULES)
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"a": 1}\n' * 100)[:30])
    with pytest.raises(ReplayError, match="cannot read the log to its end"):
        replay(broken, RULES)
    result = CliRunner().invoke(main, ["replay", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 1 and "no event log" in result.output


def test_cli_writes_the_outputs_and_a_json_summary(tmp_path: Path) -> None:
    log = generated_log(tmp_path / "events.jsonl")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["replay", str(log), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    printed = orjson.loads(result.stdout)
    assert printed == orjson.loads((out / "summary.json").read_bytes())
    assert {p.name for p in out.iterdir()} == {
        "interventions.jsonl",
        "outcomes.jsonl",
        "dead_letters.jsonl",
        "summary.json",
    }


def independent_cart_stalls(csv_path: Path, dwell_s: int) -> int:
    """Cart stalls counted straight from the Taobao CSV: an item added to the cart and not
    bought within the dwell (a buy in the same second counts as in time), once per
    silence (adds while it waits are the same silence), with the data's end as horizon."""
    by_item: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    end_ms = 0
    with csv_path.open(newline="") as fh:
        for user, item, _, behaviour, stamp in csv.reader(fh):
            ts = int(stamp)
            if not FIRST_S <= ts < END_S or behaviour not in ("cart", "buy", "pv"):
                continue
            # the data's last event: a buy becomes a purchase whose last step is 4 ms on
            end_ms = max(end_ms, ts * 1000 + (4 if behaviour == "buy" else 0))
            if behaviour == "cart":
                by_item[(user, item)].append((ts, 0))
            elif behaviour == "buy":
                by_item[(user, item)].append((ts, 1))
    stalls = 0
    for events in by_item.values():
        due: int | None = None
        for ts, kind in sorted(events):
            t = ts * 1000
            if due is not None and due <= t:
                stalls += 1
                due = None
            if kind == 0 and due is None:
                due = t + dwell_s * 1000
            elif kind == 1:
                due = None
        if due is not None and due < end_ms:
            stalls += 1
    return stalls


@pytest.mark.parametrize("dwell", ["30m", "6h"])
def test_taobao_excerpt_cart_stalls_match_an_independent_count(tmp_path: Path, dwell: str) -> None:
    check_taobao(TAOBAO_EXCERPT, tmp_path, dwell)


@pytest.mark.skipif(not TAOBAO_SLICE.exists(), reason="the shared Taobao slice is not present")
@pytest.mark.parametrize("dwell", ["10m", "2h", "1d"])
def test_taobao_slice_cart_stalls_match_an_independent_count(tmp_path: Path, dwell: str) -> None:
    check_taobao(TAOBAO_SLICE, tmp_path, dwell)


def check_taobao(src: Path, tmp_path: Path, dwell: str) -> None:
    seconds = {"10m": 600, "30m": 1800, "2h": 7200, "6h": 21600, "1d": 86400}[dwell]
    rules = rules_with_dwell(tmp_path / "rules", dwell)
    log = import_taobao(src, tmp_path / "taobao.jsonl")
    result = replay(log, rules)
    expected = independent_cart_stalls(src, seconds)
    assert expected > 0
    assert result.facts["cart_stall"] == expected


def test_compare_of_one_category_dwell_changes_only_that_category(tmp_path: Path) -> None:
    if TAOBAO_SLICE.exists():
        log = import_taobao(TAOBAO_SLICE, tmp_path / "taobao.jsonl")
    else:  # the excerpt is too small to change anything: generated traffic instead
        log = tmp_path / "generated.jsonl"
        plan = Plan(shoppers=1500, start_ms=T0, days=0.5, seed=5)
        write_file(plan, load_rulebook(RULES), log)
    counts: dict[str, int] = defaultdict(int)
    for line in log.read_bytes().splitlines():
        event = orjson.loads(line)
        if event["type"] == "cart_add":
            counts[event["category"]] += 1
    busiest = max(counts, key=lambda c: counts[c])
    a_dir = rules_with_dwell(tmp_path / "a", "2h")
    b_dir = rules_with_dwell(tmp_path / "b", "2h", **{busiest: "20m"})
    a = replay(log, a_dir, keep_facts=True)
    b = replay(log, b_dir, keep_facts=True)
    doc = compare(a, b, load_rulebook(a_dir), load_rulebook(b_dir))
    assert doc["changed_decisions"] > 0
    assert set(doc["changed_by_category"]) == {busiest}
    for entry in doc["sample"]:
        assert entry["a"]["verdict"] != entry["b"]["verdict"]
    # the same rules on both sides: nothing changes
    same = compare(
        a, replay(log, a_dir, keep_facts=True), load_rulebook(a_dir), load_rulebook(a_dir)
    )
    assert same["changed_decisions"] == 0
    assert not any(row["changed"] for row in same["rows"])
