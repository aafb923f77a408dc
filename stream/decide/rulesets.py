"""Load ``*.rules.yaml`` files into checked rules, every problem as file:line.

Beyond the schema, the checker parses each condition, checks the fields it reads
and the kinds of the values it compares them with, refuses duplicate rule ids and
rules that can never win (a higher-priority rule in the same scope whose condition
is at least as broad: ``true``, the same condition, or a subset of its ``and``
terms), and has durable-rules compile every condition.

A file with a YAML syntax error is read again rule by rule, so one broken rule
does not hide the problems of the others.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stream.decide.decider import LoadedRule
from stream.decide.durations import parse_duration
from stream.decide.expressions import (
    And,
    Between,
    Compare,
    Const,
    ExpressionError,
    In,
    Node,
    Not,
    Or,
    kind_of,
    parse,
)
from stream.decide.fields import FIELDS
from stream.decide.schema import Rule, RulesetFile
from stream.decide.yamlfile import YamlDoc, parse_yaml, validation_problems
from stream.domain.guardrails import intervention_cost
from stream.errors import RuleFileError, RuleProblem

RULES_GLOB = "*.rules.yaml"
_ITEM = re.compile(r"^(\s*)- ")


def load_rulesets(paths: list[Path], problems: list[RuleProblem]) -> list[LoadedRule]:
    """Every rule of every file, checked; problems are appended, never raised."""
    rules: list[LoadedRule] = []
    for path in paths:
        rules.extend(_load_file(path, problems))
    _check_duplicates(rules, problems)
    _check_shadowed(rules, problems)
    return rules


def _load_file(path: Path, problems: list[RuleProblem]) -> list[LoadedRule]:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(RuleProblem(name, 1, f"cannot read the file: {exc}"))
        return []
    try:
        doc = parse_yaml(text, name)
    except RuleFileError as exc:
        return _load_by_rule(text, name, exc.problems, problems)
    try:
        model = RulesetFile.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(validation_problems(doc, exc))
        # still check the conditions of the rules that are well-formed
        return _salvage(doc, problems)
    return [
        rule
        for i, spec in enumerate(model.rules)
        if (rule := _checked(spec, model, doc, ("rules", i), problems)) is not None
    ]


def _salvage(doc: YamlDoc, problems: list[RuleProblem]) -> list[LoadedRule]:
    data = doc.data if isinstance(doc.data, dict) else {}
    raw = data.get("rules")
    items: list[Any] = raw if isinstance(raw, list) else []
    for i, item in enumerate(items):
        if isinstance(item, dict) and isinstance(item.get("when"), str):
            _condition(item["when"], doc, ("rules", i, "when"), problems)
    return []


def _load_by_rule(
    text: str, name: str, syntax: list[RuleProblem], problems: list[RuleProblem]
) -> list[LoadedRule]:
    """After a YAML syntax error: parse each rule item on its own to find the rest."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, ln in enumerate(lines) if _ITEM.match(ln)]
    if not starts:
        problems.extend(syntax)
        return []
    indent = len(_ITEM.match(lines[starts[0]]).group(1))  # type: ignore[union-attr]
    starts = [i for i in starts if len(_ITEM.match(lines[i]).group(1)) == indent]  # type: ignore[union-attr]
    bounds = [*starts, len(lines)]
    for begin, end in itertools.pairwise(bounds):
        chunk = "".join(
            ln[indent:] if len(ln) > indent else ln.lstrip(" ") for ln in lines[begin:end]
        )
        try:
            doc = parse_yaml(chunk, name)
        except RuleFileError as exc:
            last = begin + len(chunk.rstrip("\n").splitlines())  # the item's last line
            for p in exc.problems:
                problems.append(RuleProblem(name, min(p.line + begin, last), p.message))
            continue
        if not isinstance(doc.data, list) or not doc.data or not isinstance(doc.data[0], dict):
            continue
        shifted = YamlDoc(name, doc.data, {loc: line + begin for loc, line in doc.lines.items()})
        try:
            Rule.model_validate(doc.data[0])
        except ValidationError as exc:
            problems.extend(validation_problems(shifted, exc, (0,)))
        when = doc.data[0].get("when")
        if isinstance(when, str):
            _condition(when, shifted, (0, "when"), problems)
    return []


def _checked(
    spec: Rule, model: RulesetFile, doc: YamlDoc, loc: tuple[Any, ...], problems: list[RuleProblem]
) -> LoadedRule | None:
    condition = _condition(spec.when, doc, (*loc, "when"), problems)
    if condition is None:
        return None
    cost, unit = intervention_cost(spec.then.type, spec.then.params)
    ttl = spec.then.params.get("ttl")
    ttl_ms: int | None = None
    if ttl is not None:
        try:
            ttl_ms = parse_duration(ttl)
        except ValueError as exc:
            problems.append(doc.problem((*loc, "then", "params", "ttl"), f"ttl: {exc}"))
            return None
    return LoadedRule(
        id=spec.id,
        ruleset=model.ruleset,
        pattern=model.pattern,
        priority=spec.priority,
        condition=condition,
        when=spec.when,
        type=spec.then.type,
        channel=spec.then.channel,
        params=dict(spec.then.params),
        enabled=spec.enabled,
        mode=spec.mode,
        owner=spec.owner,
        path=doc.path,
        line=doc.line_of(loc),
        bucket=spec.bucket or model.bucket,
        cost=cost,
        unit=unit,
        ttl_ms=ttl_ms,
        holdout=(model.holdout.share, model.holdout.salt or model.ruleset)
        if model.holdout
        else None,
    )


def _condition(
    text: str, doc: YamlDoc, loc: tuple[Any, ...], problems: list[RuleProblem]
) -> Node | None:
    line = doc.line_of(loc)
    try:
        node = parse(text)
    except ExpressionError as exc:
        problems.append(RuleProblem(doc.path, line, f"when: {exc.message} (column {exc.column})"))
        return None
    bad = _field_problems(node)
    for message in bad:
        problems.append(RuleProblem(doc.path, line, f"when: {message}"))
    return None if bad else node


def _field_problems(node: Node) -> list[str]:
    out: list[str] = []

    def check(field: str, values: tuple[Any, ...]) -> None:
        known = FIELDS.get(field)
        if known is None:
            close = [f for f in FIELDS if f.startswith(field[:3])]
            hint = f"; did you mean {close[0]!r}?" if close else ""
            out.append(f"unknown fact field {field!r}{hint} (fields: rules/README.md)")
            return
        for value in values:
            if value is not None and kind_of(value) != known[0]:
                out.append(f"{field} holds {known[0]}, compared with {value!r}")

    def walk(n: Node) -> None:
        if isinstance(n, Compare):
            check(n.field, (n.value,))
        elif isinstance(n, In):
            check(n.field, n.values)
        elif isinstance(n, Between):
            check(n.field, (n.low, n.high))
        elif isinstance(n, Not):
            walk(n.inner)
        elif isinstance(n, And | Or):
            for p in n.parts:
                walk(p)
        elif not isinstance(n, Const):
            check(n.field, ())

    walk(node)
    return out


def _check_duplicates(rules: list[LoadedRule], problems: list[RuleProblem]) -> None:
    seen: dict[str, LoadedRule] = {}
    for rule in rules:
        first = seen.setdefault(rule.id, rule)
        if first is not rule:
            problems.append(
                RuleProblem(
                    rule.path,
                    rule.line,
                    f"duplicate rule id {rule.id!r} (first at {first.path}:{first.line})",
                )
            )


def _terms(node: Node) -> frozenset[Node]:
    return frozenset(node.parts) if isinstance(node, And) else frozenset({node})


def _check_shadowed(rules: list[LoadedRule], problems: list[RuleProblem]) -> None:
    for low in rules:
        for high in rules:
            rank = (-high.priority, high.cost_rank, high.id)  # the decider's order
            if high is low or rank >= (-low.priority, low.cost_rank, low.id):
                continue  # high must win over low: priority, then the cheaper, then the id
            if high.pattern not in (None, low.pattern) or not high.enabled:
                continue
            broader = high.condition == Const(True) or _terms(high.condition) <= _terms(
                low.condition
            )
            if broader:
                problems.append(
                    RuleProblem(
                        low.path,
                        low.line,
                        f"rule {low.id!r} can never win: {high.id!r} "
                        f"({high.path}:{high.line}, priority {high.priority}) matches "
                        "whenever it does",
                    )
                )
                break
