"""Load the rules folder into a :class:`RuleBook`: timing, decider and version.

Every problem is reported as ``file:line: message``; nothing half-loaded is ever
returned, so a caller that keeps its previous rule book on error keeps running
the old rules.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from stream.decide.schema import CategoryGraphFile, DefaultsFile, TimingFile
from stream.decide.yamlfile import YamlDoc, load_yaml
from stream.domain.facts import Decision, Fact
from stream.domain.timing import Timing
from stream.errors import RuleFileError, RuleProblem

M = TypeVar("M", bound=BaseModel)

TIMING_FILE = "timing.yaml"
DEFAULTS_FILE = "defaults.yaml"
GRAPH_FILE = "category_graph.yaml"


class DefaultDecider:
    """Gives each detected pattern the default intervention from rules/defaults.yaml."""

    def __init__(self, defaults: DefaultsFile, version: str) -> None:
        self._decisions: dict[str, Decision] = {
            pattern: Decision(
                rule_id=spec.id,
                ruleset_version=version,
                type=spec.type,
                channel=spec.channel,
                params=dict(spec.params),
                explanation={"rule": spec.id, "reason": f"default for {pattern}"},
            )
            for pattern, spec in defaults.defaults.items()
        }

    def decide(self, fact: Fact) -> Decision | None:
        return self._decisions.get(fact.pattern)


@dataclass(frozen=True)
class RuleBook:
    timing: Timing
    decider: DefaultDecider
    version: str
    files: tuple[str, ...]


def load_rulebook(rules_dir: Path) -> RuleBook:
    """Load and validate the rules folder; raise RuleFileError listing every problem."""
    problems: list[RuleProblem] = []
    if not rules_dir.is_dir():
        raise RuleFileError(
            [
                RuleProblem(
                    str(rules_dir), 1, "rules folder not found; set --rules or GOLDENFLOW_RULES_DIR"
                )
            ]
        )
    timing = _load_model(rules_dir / TIMING_FILE, TimingFile, problems)
    defaults = _load_model(rules_dir / DEFAULTS_FILE, DefaultsFile, problems)
    graph = _load_model(rules_dir / GRAPH_FILE, CategoryGraphFile, problems)
    if problems or timing is None or defaults is None or graph is None:
        raise RuleFileError(problems)
    files = (TIMING_FILE, DEFAULTS_FILE, GRAPH_FILE)
    version = _version(rules_dir, files)
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
        decider=DefaultDecider(defaults, version),
        version=version,
        files=files,
    )


def _load_model(path: Path, model: type[M], problems: list[RuleProblem]) -> M | None:
    if not path.is_file():
        problems.append(RuleProblem(str(path), 1, f"missing rule file {path.name}"))
        return None
    try:
        doc = load_yaml(path)
    except RuleFileError as exc:
        problems.extend(exc.problems)
        return None
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(_problems(doc, exc))
        return None


def _problems(doc: YamlDoc, exc: ValidationError) -> list[RuleProblem]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        message = _message(err)
        out.append(doc.problem(loc, f"{where}: {message}"))
    return out


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field; check the spelling against rules/README.md"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"{err['msg']}; got {err.get('input')!r}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return msg


def _version(rules_dir: Path, files: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + (rules_dir / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]
