"""Load the rules folder into a :class:`RuleBook`: timing, decider and version.

Every problem is reported as ``file:line: message``; nothing half-loaded is ever
returned, so a caller that keeps its previous rule book on error keeps running
the old rules.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from stream.decide.decider import INTENT_FEATURES, IntentModel, RulesDecider
from stream.decide.matcher import RuleEngineError
from stream.decide.rulesets import RULES_GLOB, load_rulesets
from stream.decide.schema import CategoryGraphFile, IntentFile, TimingFile
from stream.decide.yamlfile import load_model
from stream.domain.timing import Timing
from stream.errors import RuleFileError, RuleProblem

TIMING_FILE = "timing.yaml"
INTENT_FILE = "intent.yaml"
GRAPH_FILE = "category_graph.yaml"


@dataclass(frozen=True)
class RuleBook:
    timing: Timing
    decider: RulesDecider
    version: str
    files: tuple[str, ...]


def rule_files(rules_dir: Path) -> list[Path]:
    """Every file that makes up the rule book (what the version hashes)."""
    fixed = [rules_dir / name for name in (TIMING_FILE, GRAPH_FILE, INTENT_FILE)]
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
    )


def _version(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]
