"""Load the rules folder into a :class:`RuleBook`: timing, decider and version.

Every problem is reported as ``file:line: message``; nothing half-loaded is ever
returned, so a caller that keeps its previous rule book on error keeps running
the old rules.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from stream.decide.decider import INTENT_FEATURES, IntentModel, LoadedRule, RulesDecider
from stream.decide.matcher import RuleEngineError
from stream.decide.rulesets import RULES_GLOB, load_rulesets
from stream.decide.schema import CategoryGraphFile, GuardrailsFile, IntentFile, TimingFile
from stream.decide.yamlfile import load_model
from stream.domain.budget import Bucket
from stream.domain.guardrails import Cap, Guardrails, Holdout, QuietHours
from stream.domain.timing import Timing
from stream.errors import RuleFileError, RuleProblem

TIMING_FILE = "timing.yaml"
INTENT_FILE = "intent.yaml"
GRAPH_FILE = "category_graph.yaml"
GUARDRAILS_FILE = "guardrails.yaml"


@dataclass(frozen=True)
class RuleBook:
    timing: Timing
    decider: RulesDecider
    version: str
    files: tuple[str, ...]
    guardrails: Guardrails = field(default_factory=Guardrails)


def rule_files(rules_dir: Path) -> list[Path]:
    """Every file that makes up the rule book (what the version hashes)."""
    fixed = [rules_dir / name for name in (TIMING_FILE, GRAPH_FILE, INTENT_FILE)]
    if (rules_dir / GUARDRAILS_FILE).exists():
        fixed.append(rules_dir / GUARDRAILS_FILE)
    return fixed + sorted(rules_dir.glob(RULES_GLOB))


def rules_fingerprint(rules_dir: Path) -> str:
    """A cheap hash of everything in the rules folder that could change the rule book."""
    digest = hashlib.sha256()
    for path in sorted(rules_dir.glob("*.yaml")):
        try:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        except OSError:  # removed between the listing and the read: the next look sees it
            digest.update(path.name.encode() + b"\0missing")
    return digest.hexdigest()


def load_rulebook(rules_dir: Path) -> RuleBook:
    """Load and validate the rules folder; raise RuleFileError listing every problem."""
    problems: list[RuleProblem] = []
    if not rules_dir.is_dir():
        raise RuleFileError(
            [RuleProblem(str(rules_dir), 1, "rules folder not found; set GOLDENFLOW_RULES_DIR")]
        )
    timing, _ = load_model(rules_dir / TIMING_FILE, TimingFile, problems)
    graph, _ = load_model(rules_dir / GRAPH_FILE, CategoryGraphFile, problems)
    intent, _ = load_model(rules_dir / INTENT_FILE, IntentFile, problems)
    if intent is not None:
        for name in intent.weights:
            if name not in INTENT_FEATURES:
                problems.append(
                    RuleProblem(
                        str(rules_dir / INTENT_FILE),
                        1,
                        f"weights: unknown feature {name!r}; expected one of "
                        f"{', '.join(INTENT_FEATURES)}",
                    )
                )
    ruleset_paths = sorted(rules_dir.glob(RULES_GLOB))
    if not ruleset_paths:
        problems.append(RuleProblem(str(rules_dir), 1, f"no rule files ({RULES_GLOB}) found"))
    rules = load_rulesets(ruleset_paths, problems)
    guard_file = GuardrailsFile()
    if (rules_dir / GUARDRAILS_FILE).exists():
        loaded, _ = load_model(rules_dir / GUARDRAILS_FILE, GuardrailsFile, problems)
        guard_file = loaded or guard_file
    guardrails = build_guardrails(guard_file, rules)
    problems.extend(_budget_problems(rules, guardrails, rules_dir / GUARDRAILS_FILE))
    if problems or timing is None or graph is None or intent is None:
        raise RuleFileError(problems)
    files = rule_files(rules_dir)
    version = _version(files)
    try:
        decider = RulesDecider(rules, IntentModel(intent.bias, dict(intent.weights)), version)
    except RuleEngineError as exc:
        by_id = {r.id: r for r in rules}
        raise RuleFileError(
            [RuleProblem(by_id[r].path, by_id[r].line, f"when: {exc}") for r in exc.rule_ids]
            or [RuleProblem(str(rules_dir), 1, str(exc))]
        ) from None
    return RuleBook(
        timing=Timing(
            default_cart_dwell_ms=timing.cart_stall.default_dwell,
            cart_dwell_ms=dict(timing.cart_stall.dwell),
            checkout_abandon_ms=timing.checkout_abandon.after,
            payment_stall_ms=timing.payment_stall.after,
            payment_stall_by_reason_ms=dict(timing.payment_stall.by_failure_reason),
            unpaid_lead_ms=timing.unpaid_order.lead,
            companions={k: tuple(v) for k, v in graph.companions.items()},
        ),
        decider=decider,
        version=version,
        files=tuple(str(f) for f in files),
        guardrails=guardrails,
    )


def build_guardrails(spec: GuardrailsFile, rules: list[LoadedRule]) -> Guardrails:
    """The core's guardrail settings from guardrails.yaml and each ruleset's holdout."""
    holdouts = {r.ruleset: Holdout(*r.holdout) for r in rules if r.holdout is not None}
    return Guardrails(
        caps=tuple(
            Cap(c.limit, c.window, None if c.pattern == "any" else c.pattern) for c in spec.caps
        ),
        quiet_hours={ch: QuietHours(q.start, q.end) for ch, q in spec.quiet_hours.items()},
        max_defer_ms=spec.max_defer,
        offer_ttl_ms=spec.stacking.offer_ttl,
        stacking=spec.stacking.enabled,
        min_intent=spec.min_intent,
        default_timezone=spec.default_timezone,
        holdouts=holdouts,
        default_holdout=Holdout(spec.holdout.share, spec.holdout.salt or ""),
        attribution_ms=dict(spec.attribution.by_pattern),
        default_attribution_ms=spec.attribution.window,
        buckets={name: Bucket(name, dict(daily)) for name, daily in spec.budgets.buckets.items()},
        slice_share=spec.budgets.slice_share,
    )


def _budget_problems(
    rules: list[LoadedRule], guardrails: Guardrails, guard_path: Path
) -> list[RuleProblem]:
    """Every rule that costs something must draw from a bucket budgeted in its unit."""
    problems = []
    for rule in rules:
        if rule.cost <= 0 or rule.unit is None:
            continue
        if rule.bucket is None:
            problems.append(
                RuleProblem(
                    rule.path,
                    rule.line,
                    f"rule {rule.id!r} spends {rule.cost:g} {rule.unit} but names no budget "
                    f"bucket; add 'bucket: <name>' to the rule or its ruleset "
                    f"(buckets are declared in {guard_path.name})",
                )
            )
            continue
        bucket = guardrails.buckets.get(rule.bucket)
        if bucket is None or rule.unit not in bucket.daily:
            known = ", ".join(sorted(guardrails.buckets)) or "none"
            problems.append(
                RuleProblem(
                    rule.path,
                    rule.line,
                    f"rule {rule.id!r} draws {rule.unit} from bucket {rule.bucket!r}, which has "
                    f"no daily {rule.unit} budget in {guard_path.name} (buckets: {known})",
                )
            )
    return problems


def _version(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]
