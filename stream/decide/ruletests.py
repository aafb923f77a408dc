"""Test cases kept beside the rules (``*.test.yaml``): given a fact, expect a decision."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.decide.rulebook import RuleBook
from stream.decide.schema import RuleTestFile
from stream.decide.yamlfile import load_model
from stream.domain.facts import Decision, Fact
from stream.errors import RuleFileError, RuleProblem

TESTS_GLOB = "*.test.yaml"


@dataclass(frozen=True)
class CaseResult:
    path: str
    line: int
    name: str
    passed: bool
    detail: str


def fact_from(values: dict[str, Any]) -> Fact:
    """A fact as a rule test or ``rules explain`` gives it: the fields, plus optional
    ``user_id``, ``at`` (epoch ms; default 0) and ``pattern``."""
    fields = dict(values)
    at = fields.pop("at", 0)
    user = str(fields.pop("user_id", "test-shopper"))
    pattern = str(fields.get("pattern", ""))
    return Fact(pattern, user, int(at), "test", "test", fields)


def run_tests(rulebook: RuleBook, rules_dir: Path) -> list[CaseResult]:
    """Run every case of every ``*.test.yaml``; raise RuleFileError on a malformed file."""
    results: list[CaseResult] = []
    problems: list[RuleProblem] = []
    for path in sorted(rules_dir.glob(TESTS_GLOB)):
        model, doc = load_model(path, RuleTestFile, problems)
        if model is None or doc is None:
            continue
        for i, case in enumerate(model.cases):
            decision = rulebook.decider.decide(fact_from(case.fact))
            passed, detail = _judge(case.expect, decision)
            results.append(
                CaseResult(str(path), doc.line_of(("cases", i)), case.name, passed, detail)
            )
    if problems:
        raise RuleFileError(problems)
    return results


def _judge(expect: Any, decision: Decision | None) -> tuple[bool, str]:
    got = (
        "none"
        if decision is None
        else f"{decision.rule_id} ({decision.type} via {decision.channel}, {decision.mode})"
    )
    if expect == "none":
        return decision is None, f"expected no decision, got {got}"
    if decision is None:
        return False, f"expected {expect.rule or expect.type}, got no decision"
    wrong = [
        f"{name} {want!r}, got {have!r}"
        for name, want, have in (
            ("rule", expect.rule, decision.rule_id),
            ("type", expect.type, decision.type),
            ("channel", expect.channel, decision.channel),
        )
        if want is not None and want != have
    ]
    also = decision.explanation.get("also_matched")
    return not wrong, (
        "expected " + "; ".join(wrong) + f" (also matched: {also})"
    ) if wrong else got
