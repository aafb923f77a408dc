"""``goldenflow report``: reading outcomes records, uplift statistics, the command."""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from stream.cli import main
from stream.report.outcomes import Outcomes, ReportError, read_file
from stream.report.render import report_document
from stream.report.uplift import Group, build_report, newcombe_interval, wilson_interval
from tests.helpers import T0

# -- record builders -----------------------------------------------------------------------

_ids = iter(range(1, 10**9))


def decision(
    pattern: str = "cart_stall",
    rule: str | None = "cart_stall.coupon",
    arm: str | None = "treatment",
    result: str = "emitted",
    reason: str | None = None,
    cost: float = 0.0,
    unit: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    n = next(_ids)
    return {
        "kind": "decision",
        "id": f"{n:032x}",
        "user_id": f"u{n}",
        "pattern": pattern,
        "rule": rule,
        "ruleset_version": "v1",
        "arm": arm,
        "result": result,
        "reason": reason,
        "at_ms": T0 + n,
        "at": "2025-11-24T16:00:00.000Z",
        "release_at_ms": None,
        "intervention_type": "coupon" if rule else None,
        "channel": "push" if rule else None,
        "bucket": None,
        "cost": cost,
        "unit": unit,
        "value": None,
        "category": None,
        **extra,
    }


def control(**kw: Any) -> dict[str, Any]:
    return decision(arm="control", result="suppressed", reason="holdout", **kw)


def attribution(dec: dict[str, Any], converted: bool, gmv: float = 0.0) -> dict[str, Any]:
    return {
        "kind": "attribution",
        "id": dec["id"],
        "user_id": dec["user_id"],
        "pattern": dec["pattern"],
        "rule": dec["rule"],
        "arm": dec["arm"],
        "result": "converted" if converted else "lost",
        "gmv": gmv if converted else 0.0,
        "at_ms": dec["at_ms"] + 60_000,
        "order_id": "o-" + dec["id"][-6:] if converted else None,
        "credited_to": None,
    }


def outcomes_of(records: Iterable[dict[str, Any] | bytes]) -> Outcomes:
    out = Outcomes(source="test")
    for i, rec in enumerate(records, start=1):
        out.add(rec if isinstance(rec, bytes) else orjson.dumps(rec), f"record {i}")
    return out


def write_jsonl(path: Path, records: Iterable[dict[str, Any] | bytes]) -> Path:
    lines = [r if isinstance(r, bytes) else orjson.dumps(r) for r in records]
    data = b"\n".join(lines) + b"\n"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def row(groups: list[Group], level: str, pattern: str | None, rule: str | None) -> Group:
    [found] = [g for g in groups if (g.level, g.pattern, g.rule) == (level, pattern, rule)]
    return found


# -- the interval --------------------------------------------------------------------------

# Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10 (hybrid score
# interval without continuity correction), 95%, to 4 decimals.
NEWCOMBE_TABLE_II = [
    ((56, 70, 48, 80), 0.2000, 0.0524, 0.3339),  # (a)
    ((9, 10, 3, 10), 0.6000, 0.1705, 0.8090),  # (b)
    ((6, 7, 2, 7), 0.5714, 0.0582, 0.8062),  # (c)
    ((5, 56, 0, 29), 0.0893, -0.0381, 0.1926),  # (d)
    ((0, 10, 0, 20), 0.0000, -0.1611, 0.2775),  # (e)
    ((0, 10, 0, 10), 0.0000, -0.2775, 0.2775),  # (f)
    ((10, 10, 0, 20), 1.0000, 0.6791, 1.0000),  # (g)
    ((10, 10, 0, 10), 1.0000, 0.6075, 1.0000),  # (h)
]


@pytest.mark.parametrize(("counts", "estimate", "low", "high"), NEWCOMBE_TABLE_II)
def test_interval_matches_newcombe_table(
    counts: tuple[int, int, int, int], estimate: float, low: float, high: float
) -> None:
    interval = newcombe_interval(*counts)
    assert interval is not None
    assert round(interval.estimate, 4) == pytest.approx(estimate)
    assert round(interval.low, 4) == pytest.approx(low)
    assert round(interval.high, 4) == pytest.approx(high)


def test_wilson_interval_and_empty_samples() -> None:
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=5e-5)
    low, high = wilson_interval(56, 70)
    assert low < 0.8 < high
    assert newcombe_interval(3, 10, 0, 0) is None
    assert newcombe_interval(0, 0, 3, 10) is None
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


# -- reading -----------------------------------------------------------------------------


def test_records_are_deduplicated_by_kind_and_id() -> None:
    d = decision()
    a = attribution(d, converted=True, gmv=40.0)
    later_copy = {**d, "pattern": "other"}  # same (kind, id): the first copy wins
    out = outcomes_of([d, a, d, a, later_copy])
    assert len(out.decisions) == 1  # the attribution shares the id but not the kind
    assert len(out.attributions) == 1
    assert out.duplicates == 3
    assert out.decisions[d["id"]].pattern == "cart_stall"
    report = build_report(out)
    assert report.total.treatment.n == 1
    assert report.total.treatment.conversions == 1
    assert report.total.treatment.gmv == 40.0


def test_malformed_records_are_skipped_and_counted(tmp_path: Path) -> None:
    good = decision()
    bad_lines: list[dict[str, Any] | bytes] = [
        b"{not json",
        b"[1, 2]",
        b'"text"',
        {"kind": "heartbeat", "id": "x"},
        {**decision(), "id": None},
        {**decision(), "arm": "both"},
        {**decision(), "cost": "five"},
        {**decision(), "cost": -1},
        {**decision(), "at_ms": "yesterday"},
        decision(arm="treatment", result="suppressed", reason="cap"),
        {**attribution(good, True), "result": "maybe"},
        b"\xff\xfe not utf-8",
    ]
    path = write_jsonl(tmp_path / "o.jsonl", [good, *bad_lines, b"", attribution(good, False)])
    out = read_file(path)
    assert out.records == len(bad_lines) + 2  # the blank line is not a record
    assert len(out.decisions) == 1
    assert len(out.attributions) == 1
    assert out.skipped == {
        "not_json": 2,
        "not_object": 2,
        "unknown_kind": 1,
        "missing_field": 1,
        "bad_value": 3,
        "wrong_type": 2,
        "inconsistent": 1,
    }
    assert out.skipped_total == len(bad_lines)
    assert out.examples[0].startswith("line 2: not JSON")
    assert len(out.examples) == 5


def test_gzip_files_and_a_truncated_end(tmp_path: Path) -> None:
    records = [decision() for _ in range(200)]
    path = write_jsonl(tmp_path / "o.jsonl.gz", records)
    assert len(read_file(path).decisions) == 200
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    out = read_file(cut)
    assert 0 < len(out.decisions) < 200
    assert out.skipped["truncated"] == 1


def test_unreadable_sources_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="missing"):
        read_file(tmp_path / "absent.jsonl")
    plain = write_jsonl(tmp_path / "plain.jsonl.gz", [decision()])
    plain.write_bytes(orjson.dumps(decision()))
    with pytest.raises(ReportError, match="not a readable gzip file"):
        read_file(plain)


# -- statistics ----------------------------------------------------------------------------


def test_open_decisions_count_as_not_converted() -> None:
    t1, t2, t3 = decision(), decision(), decision()
    c1, c2 = control(), control()
    records = [t1, t2, t3, c1, c2]
    records += [attribution(t1, True, 30.0), attribution(t2, False), attribution(c1, True, 20.0)]
    total = build_report(outcomes_of(records)).total
    assert (total.treatment.n, total.treatment.conversions, total.treatment.lost) == (3, 1, 1)
    assert total.treatment.open == 1
    assert total.treatment.rate == pytest.approx(1 / 3)
    assert (total.control.n, total.control.conversions, total.control.open) == (2, 1, 1)
    assert total.uplift is not None
    assert total.uplift.estimate == pytest.approx(1 / 3 - 1 / 2)


def test_a_group_without_control_has_no_uplift() -> None:
    with_holdout = [decision(rule="a", cost=5, unit="USD") for _ in range(4)] + [
        control(rule="a") for _ in range(2)
    ]
    no_holdout = [decision(rule="b", cost=5, unit="USD") for _ in range(3)]
    records = [*with_holdout, *no_holdout]
    records += [attribution(d, True, 10.0) for d in records[:3] + no_holdout[:1]]
    report = build_report(outcomes_of(records))
    b = row(report.groups, "rule", "cart_stall", "b")
    assert b.treatment.n == 3
    assert b.control.n == 0
    assert b.uplift is None
    assert b.incremental_orders is None
    assert b.incremental_gmv is None
    assert b.cost_per_incremental_order == {"USD": None}
    a = row(report.groups, "rule", "cart_stall", "a")
    assert a.uplift is not None
    doc = report_document(report)
    b_doc = next(g for g in doc["groups"] if g["rule"] == "b")
    assert b_doc["uplift"] is None
    assert b_doc["control"] == {
        "n": 0,
        "conversions": 0,
        "lost": 0,
        "open": 0,
        "rate": None,
        "gmv": 0.0,
    }


def test_counts_per_result_and_suppression_reason() -> None:
    records = [
        decision(),
        decision(result="deferred"),
        control(),
        control(),
        decision(arm=None, result="suppressed", reason="cap"),
        decision(arm=None, result="suppressed", reason="cap"),
        decision(arm=None, result="suppressed", reason="quiet_hours"),
        decision(arm=None, result="suppressed", reason="shadow"),
        decision(arm=None, result="suppressed", reason=None),
        decision(rule=None, arm=None, result="no_rule"),
        decision(pattern="checkout_stall", rule="r", arm=None, result="suppressed", reason="cap"),
    ]
    report = build_report(outcomes_of(records))
    rule_row = row(report.groups, "rule", "cart_stall", "cart_stall.coupon")
    assert rule_row.decisions == 9
    assert (rule_row.emitted, rule_row.deferred, rule_row.no_rule) == (2, 1, 0)
    assert rule_row.suppressed == {
        "holdout": 2,
        "cap": 2,
        "quiet_hours": 1,
        "shadow": 1,
        "unspecified": 1,
    }
    no_rule = row(report.groups, "rule", "cart_stall", None)
    assert (no_rule.decisions, no_rule.no_rule) == (1, 1)
    pattern = row(report.groups, "pattern", "cart_stall", None)
    assert pattern.decisions == 10
    assert report.total.decisions == 11
    assert report.total.suppressed["cap"] == 3
    # rows: each pattern's rules (no rule last), its total, then "all"
    assert [(g.level, g.pattern, g.rule) for g in report.groups] == [
        ("rule", "cart_stall", "cart_stall.coupon"),
        ("rule", "cart_stall", None),
        ("pattern", "cart_stall", None),
        ("rule", "checkout_stall", "r"),
        ("pattern", "checkout_stall", None),
        ("all", None, None),
    ]
    by_pattern = build_report(outcomes_of(records), by="pattern")
    assert [g.level for g in by_pattern.groups] == ["pattern", "pattern", "all"]
    only = build_report(outcomes_of(records), patterns=["checkout_stall"])
    assert only.total.decisions == 1
    with pytest.raises(ReportError, match="cart_stall, checkout_stall"):
        build_report(outcomes_of(records), patterns=["cart-stall"])


def test_spend_per_unit_and_cost_per_incremental_order() -> None:
    usd = [decision(rule="coupon", cost=5.0, unit="USD") for _ in range(10)]
    points = [decision(rule="points", cost=100, unit="points") for _ in range(10)]
    reminders = [decision(rule="reminder", cost=0.0, unit=None) for _ in range(10)]
    held_coupon = [control(rule="coupon", cost=5.0, unit="USD")]
    held_coupon += [control(rule="coupon") for _ in range(9)]
    held_points = [control(rule="points") for _ in range(10)]
    records: list[dict[str, Any]] = [*usd, *points, *reminders, *held_coupon, *held_points]
    # coupon: 6/10 treated convert, 1/10 held out; points: 0/10 treated, 1/10 held out
    records += [attribution(d, True, 50.0) for d in usd[:6]]
    records += [attribution(d, True, 25.0) for d in (held_coupon[0], held_points[0])]
    report = build_report(outcomes_of(records))
    coupon = row(report.groups, "rule", "cart_stall", "coupon")
    assert coupon.spend == {"USD": 50.0}  # treatment only: the held-out cost is not spent
    assert coupon.uplift is not None
    assert coupon.uplift.estimate == pytest.approx(0.6 - 0.1)
    assert coupon.incremental_orders == pytest.approx(5.0)
    assert coupon.incremental_gmv == pytest.approx((300 / 10 - 25 / 10) * 10)
    assert coupon.cost_per_incremental_order == {"USD": pytest.approx(10.0)}
    pts = row(report.groups, "rule", "cart_stall", "points")
    assert pts.spend == {"points": 1000.0}
    assert pts.incremental_orders == pytest.approx(-1.0)  # 0/10 vs 1/10 held out
    assert pts.cost_per_incremental_order == {"points": None}
    assert row(report.groups, "rule", "cart_stall", "reminder").spend == {}
    assert report.total.spend == {"USD": 50.0, "points": 1000.0}
    doc = report_document(report)
    assert doc["groups"][-1]["spend"] == {"USD": 50.0, "points": 1000.0}


def test_simulated_lift_is_inside_the_interval(tmp_path: Path) -> None:
    rng = random.Random(20240501)
    records: list[dict[str, Any]] = []
    for arm, p in (("treatment", 0.45), ("control", 0.25)):
        for _ in range(3000):
            d = decision() if arm == "treatment" else control()
            converted = rng.random() < p
            records += [d, attribution(d, converted, rng.uniform(20, 80))]
    rng.shuffle(records)
    report = build_report(read_file(write_jsonl(tmp_path / "sim.jsonl", records)))
    total = report.total
    assert (total.treatment.n, total.control.n) == (3000, 3000)
    assert total.treatment.open == total.control.open == 0
    uplift = total.uplift
    assert uplift is not None
    assert 0.20 in uplift
    assert uplift.low > 0
    assert uplift.high - uplift.low < 0.06
    assert total.incremental_orders == pytest.approx(uplift.estimate * 3000)


def test_unmatched_attributions_are_counted_not_used() -> None:
    seen = decision()
    unseen = decision()
    records = [seen, attribution(seen, True, 5.0), attribution(unseen, True, 9.0)]
    report = build_report(outcomes_of(records))
    assert report.unmatched_attributions == 1
    assert report.total.treatment.conversions == 1


# -- the command ---------------------------------------------------------------------------


def sample_file(tmp_path: Path) -> Path:
    t = [decision(cost=4.0, unit="USD") for _ in range(6)]
    c = [control() for _ in range(4)]
    other = [decision(pattern="checkout_stall", rule="r") for _ in range(2)]
    records: list[dict[str, Any] | bytes] = [*t, *c, *other]
    records += [attribution(d, True, 60.0) for d in t[:3]]
    records += [attribution(d, False) for d in t[3:5]]  # t[5] still open
    records += [attribution(c[0], True, 40.0), *(attribution(d, False) for d in c[1:])]
    records += [t[0], b"{oops"]
    return write_jsonl(tmp_path / "outcomes.jsonl", records)


def test_cli_prints_tables(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(sample_file(tmp_path))])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "Decisions" in text and "Uplift" in text
    assert "cart_stall.coupon" in text
    assert "3/6 (1)" in text  # conversions/n (open) of the treatment arm
    assert "1/4" in text
    assert "+25.0pp" in text
    assert "3 decision(s) still open" in text  # two of them in checkout_stall
    assert "1 duplicate record(s)" in text
    assert "1 record(s) skipped: not_json 1" in text


def test_cli_json_document(tmp_path: Path) -> None:
    path = sample_file(tmp_path)
    result = CliRunner().invoke(main, ["report", str(path), "--json"])
    assert result.exit_code == 0, result.output
    doc = orjson.loads(result.output)
    assert doc["version"] == 1
    assert doc["interval"] == "newcombe-hybrid-score"
    assert doc["source"]["skipped"] == {"not_json": 1}
    assert doc["source"]["duplicates"] == 1
    assert [(g["level"], g["pattern"], g["rule"]) for g in doc["groups"]] == [
        ("rule", "cart_stall", "cart_stall.coupon"),
        ("pattern", "cart_stall", None),
        ("rule", "checkout_stall", "r"),
        ("pattern", "checkout_stall", None),
        ("all", None, None),
    ]
    coupon = doc["groups"][0]
    assert coupon["treatment"] == {
        "n": 6,
        "conversions": 3,
        "lost": 2,
        "open": 1,
        "rate": 0.5,
        "gmv": 180.0,
    }
    assert coupon["control"]["rate"] == 0.25
    assert coupon["uplift"]["estimate"] == 0.25
    assert coupon["uplift"]["low"] < 0 < coupon["uplift"]["high"]
    assert coupon["incremental_orders"] == 1.5
    assert coupon["incremental_gmv"] == 120.0  # (180/6 - 40/4) * 6
    assert coupon["spend"] == {"USD": 24.0}
    assert coupon["cost_per_incremental_order"] == {"USD": 16.0}
    assert doc["groups"][2]["uplift"] is None
    # the same input gives the same document
    again = CliRunner().invoke(main, ["report", str(path), "--json"])
    assert again.output == result.output
    by_pattern = CliRunner().invoke(
        main, ["report", str(path), "--json", "--by", "pattern", "--pattern", "cart_stall"]
    )
    doc = orjson.loads(by_pattern.output)
    assert [(g["level"], g["pattern"]) for g in doc["groups"]] == [
        ("pattern", "cart_stall"),
        ("all", None),
    ]
    assert doc["patterns"] == ["cart_stall"]


def test_cli_errors_say_what_and_how(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 1
    assert "none.jsonl is missing" in result.output
    result = CliRunner().invoke(main, ["report", str(sample_file(tmp_path)), "--pattern", "x"])
    assert result.exit_code == 1
    assert "no decisions for pattern x" in result.output
    assert "leave --pattern out" in result.output
