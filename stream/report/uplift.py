"""Uplift per pattern and rule from decisions and attributions (pure: no I/O).

The treatment arm is every decision with arm ``treatment`` (emitted, or deferred:
a deferred command goes out later and its cost is already charged). The control
arm is every decision with arm ``control`` (suppressed on purpose by the holdout).
Other suppressed decisions and ``no_rule`` decisions are in neither arm.

A decision converts when its attribution says ``converted``. A decision whose
attribution has not arrived yet (its window is still open) counts in its arm as
not converted and is reported as ``open``.

Uplift is rate(treatment) - rate(control), with a confidence interval from
Newcombe's hybrid score method (method 10 of Newcombe 1998): the Wilson score
interval of each rate, combined by the square-and-add rule

    low  = d - sqrt((p_t - l_t)^2 + (u_c - p_c)^2)
    high = d + sqrt((u_t - p_t)^2 + (p_c - l_c)^2)

where d = p_t - p_c and (l, u) are the Wilson limits. Unlike the Wald interval it
stays inside [-1, 1], is not degenerate when a rate is 0 or 1, and keeps close
to its nominal coverage with small arms, which holdouts often are.

Reference: R. G. Newcombe, "Interval estimation for the difference between
independent proportions: comparison of eleven methods", Statistics in Medicine
17 (1998) 873-890.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

from stream.report.outcomes import Decision, Outcomes, ReportError

Level = Literal["rule", "pattern", "all"]
By = Literal["rule", "pattern"]


# -- intervals ---------------------------------------------------------------------------


def z_value(confidence: float) -> float:
    """The two-sided standard normal quantile: 1.959964 for 0.95."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (n > 0)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    z = z_value(confidence)
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float
    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


def newcombe_interval(
    x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95
) -> Interval | None:
    """Interval for p1 - p2 (p1 = x1/n1, p2 = x2/n2) by Newcombe's hybrid score method.

    None when either sample is empty (the difference is undefined).
    """
    if n1 <= 0 or n2 <= 0:
        return None
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, confidence)
    l2, u2 = wilson_interval(x2, n2, confidence)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Interval(d, max(-1.0, low), min(1.0, high))


# -- groups ------------------------------------------------------------------------------


@dataclass
class Arm:
    """One arm of one group: decisions, how they ended, and the GMV they brought."""

    n: int = 0
    conversions: int = 0
    lost: int = 0
    open: int = 0
    gmv: float = 0.0

    @property
    def rate(self) -> float | None:
        return self.conversions / self.n if self.n else None


@dataclass
class Group:
    """Counts and statistics of one row: a (pattern, rule), a pattern, or everything."""

    level: Level
    pattern: str | None
    rule: str | None
    confidence: float = 0.95
    decisions: int = 0
    emitted: int = 0  # emitted + deferred
    deferred: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)  # by reason
    no_rule: int = 0
    spend: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    treatment: Arm = field(default_factory=Arm)
    control: Arm = field(default_factory=Arm)

    def add(self, decision: Decision, result: str | None, gmv: float) -> None:
        """Count one decision; ``result`` is its attribution's result (None: still open)."""
        self.decisions += 1
        if decision.result in ("emitted", "deferred"):
            self.emitted += 1
            if decision.result == "deferred":
                self.deferred += 1
        elif decision.result == "suppressed":
            self.suppressed[decision.reason or "unspecified"] += 1
        else:
            self.no_rule += 1
        if decision.arm is None:
            return
        if decision.arm == "treatment" and (decision.cost or decision.unit):
            self.spend[decision.unit or "unknown"] += decision.cost
        arm = self.treatment if decision.arm == "treatment" else self.control
        arm.n += 1
        if result is None:
            arm.open += 1
        elif result == "converted":
            arm.conversions += 1
            arm.gmv += gmv
        else:
            arm.lost += 1

    @property
    def uplift(self) -> Interval | None:
        """rate(treatment) - rate(control) with its interval; None without both arms."""
        t, c = self.treatment, self.control
        return newcombe_interval(t.conversions, t.n, c.conversions, c.n, self.confidence)

    @property
    def incremental_orders(self) -> float | None:
        uplift = self.uplift
        return None if uplift is None else uplift.estimate * self.treatment.n

    @property
    def incremental_gmv(self) -> float | None:
        t, c = self.treatment, self.control
        if not t.n or not c.n:
            return None
        return (t.gmv / t.n - c.gmv / c.n) * t.n

    @property
    def cost_per_incremental_order(self) -> dict[str, float | None]:
        """Spend per unit over incremental orders; None when those are undefined or <= 0."""
        orders = self.incremental_orders
        return {
            unit: (spent / orders if orders is not None and orders > 0 else None)
            for unit, spent in sorted(self.spend.items())
        }


@dataclass
class Report:
    """The rows of a report and what was read to make them."""

    outcomes: Outcomes
    by: By
    patterns: tuple[str, ...]  # the --pattern filter; empty: every pattern
    confidence: float
    groups: list[Group]
    unmatched_attributions: int  # attributions without a decision in an arm
    first_at_ms: int | None
    last_at_ms: int | None

    @property
    def total(self) -> Group:
        return self.groups[-1]


def build_report(
    outcomes: Outcomes,
    *,
    by: By = "rule",
    patterns: Iterable[str] = (),
    confidence: float = 0.95,
) -> Report:
    """Group the decisions (by pattern and rule, or by pattern) and join their attributions.

    Rows come ordered: per pattern (sorted), its rules (sorted, no rule last) then the
    pattern's total; the last row is ``all``. With ``by="pattern"`` only the pattern
    totals and ``all``. A ``patterns`` filter that matches no decision is refused
    (ReportError) unless the source has no decisions at all.
    """
    wanted = tuple(sorted(set(patterns)))
    groups: dict[tuple[Level, str | None, str | None], Group] = {}

    def group(level: Level, pattern: str | None, rule: str | None) -> Group:
        key = (level, pattern, rule)
        if key not in groups:
            groups[key] = Group(level, pattern, rule, confidence)
        return groups[key]

    total = Group("all", None, None, confidence)
    times: list[int] = []
    for decision in outcomes.decisions.values():
        if wanted and decision.pattern not in wanted:
            continue
        attribution = outcomes.attributions.get(decision.id) if decision.arm else None
        result = attribution.result if attribution else None
        gmv = attribution.gmv if attribution else 0.0
        rows = [group("pattern", decision.pattern, None), total]
        if by == "rule":
            rows.append(group("rule", decision.pattern, decision.rule))
        for row in rows:
            row.add(decision, result, gmv)
        if decision.at_ms is not None:
            times.append(decision.at_ms)

    if wanted and not total.decisions and outcomes.decisions:
        seen = sorted({d.pattern for d in outcomes.decisions.values()})
        raise ReportError(
            f"no decisions for pattern {', '.join(wanted)} in {outcomes.source}; "
            f"its patterns are {', '.join(seen)}; check the spelling or leave --pattern out"
        )

    def order(key: tuple[Level, str | None, str | None]) -> tuple[str, int, bool, str]:
        level, pattern, rule = key
        return (pattern or "", level == "pattern", rule is None, rule or "")

    ordered = [groups[key] for key in sorted(groups, key=order)]
    in_arms = {d.id for d in outcomes.decisions.values() if d.arm is not None}
    unmatched = sum(1 for a in outcomes.attributions if a not in in_arms)
    return Report(
        outcomes=outcomes,
        by=by,
        patterns=wanted,
        confidence=confidence,
        groups=[*ordered, total],
        unmatched_attributions=unmatched,
        first_at_ms=min(times, default=None),
        last_at_ms=max(times, default=None),
    )
