"""Two rule versions on the same log: what changes, per rule, and for which shoppers."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from stream.decide.rulebook import RuleBook
from stream.domain.facts import Fact
from stream.replay.run import ReplayResult

SAMPLE = 20


@dataclass
class Side:
    decisions: int = 0
    emitted: int = 0
    suppressed: int = 0
    spend: dict[str, float] = field(default_factory=dict)
    conversions: int = 0

    def document(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "emitted": self.emitted,
            "suppressed": self.suppressed,
            "spend": {unit: round(v, 2) for unit, v in sorted(self.spend.items())},
            "conversions": self.conversions,
        }


def _by_rule(result: ReplayResult) -> dict[tuple[str, str], Side]:
    """(pattern, rule or "(no rule)") -> counts; conversions follow their decision."""
    sides: dict[tuple[str, str], Side] = defaultdict(Side)
    for rec in result.outcomes:
        key = (rec["pattern"], rec["rule"] or "(no rule)")
        side = sides[key]
        if rec["kind"] == "decision":
            side.decisions += 1
            if rec["result"] in ("emitted", "deferred"):
                side.emitted += 1
                if rec["cost"] and rec["unit"]:
                    side.spend[rec["unit"]] = side.spend.get(rec["unit"], 0.0) + rec["cost"]
            elif rec["result"] == "suppressed":
                side.suppressed += 1
        elif rec["result"] == "converted":
            side.conversions += 1
    return sides


#: fact fields about the shopper as a whole (history, the whole cart), not the fact itself:
#: another category's change can move them
HISTORY = frozenset({"prior_stalls", "prior_interventions", "cart_value", "views_24h"})


def _own(fact: Fact) -> tuple[int, dict[str, Any]]:
    """A fact's time and fields, less the shopper's history (which other facts move)."""
    return fact.at_ms, {k: v for k, v in fact.fields.items() if k not in HISTORY}


def _decisions(result: ReplayResult) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in result.outcomes if r["kind"] == "decision"}


def _verdict(rec: dict[str, Any] | None) -> tuple[Any, ...]:
    if rec is None:
        return ("(not detected)",)
    return (rec["rule"], rec["result"], rec["reason"])


def compare(a: ReplayResult, b: ReplayResult, book_a: RuleBook, book_b: RuleBook) -> dict[str, Any]:
    """A side-by-side table per pattern and rule, and a sample of changed decisions
    with both explanations (the facts must have been kept: ``keep_facts=True``)."""
    rows_a, rows_b = _by_rule(a), _by_rule(b)
    rows = []
    for pattern, rule in sorted(set(rows_a) | set(rows_b)):
        left, right = rows_a.get((pattern, rule), Side()), rows_b.get((pattern, rule), Side())
        rows.append(
            {
                "pattern": pattern,
                "rule": rule,
                "a": left.document(),
                "b": right.document(),
                "changed": left.document() != right.document(),
            }
        )
    dec_a, dec_b = _decisions(a), _decisions(b)
    changed_ids = sorted(
        i for i in set(dec_a) | set(dec_b) if _verdict(dec_a.get(i)) != _verdict(dec_b.get(i))
    )
    sample = []
    for decision_id in changed_ids[:SAMPLE]:
        fact = a.facts_by_id.get(decision_id) or b.facts_by_id.get(decision_id)
        entry: dict[str, Any] = {"id": decision_id}
        for name, rec, book, result in (
            ("a", dec_a.get(decision_id), book_a, a),
            ("b", dec_b.get(decision_id), book_b, b),
        ):
            side: dict[str, Any] = {"verdict": list(_verdict(rec))}
            own = result.facts_by_id.get(decision_id)
            if own is not None:
                decision = book.decider.decide(own)
                side["explanation"] = decision.explanation if decision else {"rule": None}
            entry[name] = side
        if fact is not None:
            entry.update(
                user_id=fact.user_id,
                pattern=fact.pattern,
                category=fact.fields.get("category"),
                at=fact.at_ms,
            )
        sample.append(entry)
    # A change is direct when the fact itself differs (detected on one side only, or at
    # another time or with other fields, e.g. a different dwell); otherwise it is a
    # knock-on: the same fact, decided differently because the shopper's history or
    # other decisions (prior stalls, caps, stacking, budget) changed.
    categories: dict[str, int] = defaultdict(int)
    knock_on: dict[str, int] = defaultdict(int)
    for decision_id in changed_ids:
        rec = dec_a.get(decision_id) or dec_b.get(decision_id) or {}
        fa, fb = a.facts_by_id.get(decision_id), b.facts_by_id.get(decision_id)
        direct = fa is None or fb is None or _own(fa) != _own(fb)
        (categories if direct else knock_on)[str(rec.get("category"))] += 1
    return {
        "a": {"rules_version": a.rules_version, "summary": a.summary()},
        "b": {"rules_version": b.rules_version, "summary": b.summary()},
        "rows": rows,
        "changed_decisions": len(changed_ids),
        "changed_by_category": dict(sorted(categories.items())),
        "knock_on_by_category": dict(sorted(knock_on.items())),
        "sample": sample,
    }
