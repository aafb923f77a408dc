"""Decide an intervention for a fact from the rule files.

Conditions are matched by durable-rules (:mod:`stream.decide.matcher`); this module
adds what rule authors see: the intent score, the shopper's local hour, conflict
resolution (highest priority wins, ties by rule id) and an explanation on every
decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stream.decide.expressions import Node, fields
from stream.decide.matcher import RuleMatcher
from stream.domain.facts import PATTERNS, Decision, Fact

INTENT_FEATURES = {
    "prior_stalls": "patterns detected for this shopper before",
    "price_level": "log10(1 + price or amount)",
    "cart_value_level": "log10(1 + cart value)",
    "dwell_hours": "time at this step, hours",
    "payment_failures": "failed payments for the order",
    "repeat_adds": "extra units of the item added (qty - 1)",
    "views_24h": "product and cart views in the 24 hours before",
}


@dataclass(frozen=True)
class LoadedRule:
    id: str
    ruleset: str
    pattern: str | None
    priority: int
    condition: Node
    when: str
    type: str
    channel: str
    params: Mapping[str, Any]
    enabled: bool
    mode: str
    owner: str
    path: str
    line: int
    bucket: str | None = None
    #: what one command commits: amount and unit (0 and None: free)
    cost: float = 0.0
    unit: str | None = None
    ttl_ms: int | None = None
    #: the ruleset's own holdout (share, salt), if it sets one
    holdout: tuple[float, str] | None = None

    @property
    def cost_rank(self) -> tuple[int, float]:
        """Least cost first: free (a reminder) before points, points before money."""
        if self.cost <= 0:
            return (0, 0.0)
        return (1 if self.unit == "points" else 2, self.cost)


@dataclass(frozen=True)
class IntentModel:
    bias: float
    weights: Mapping[str, float]

    def features(self, fact: Mapping[str, Any]) -> dict[str, float]:
        price = _num(fact.get("price")) or _num(fact.get("amount"))
        return {
            "prior_stalls": _num(fact.get("prior_stalls")),
            "price_level": math.log10(1 + max(price, 0.0)),
            "cart_value_level": math.log10(1 + max(_num(fact.get("cart_value")), 0.0)),
            "dwell_hours": _num(fact.get("dwell_ms")) / 3_600_000,
            "payment_failures": _num(fact.get("payment_failures")),
            "repeat_adds": max(_num(fact.get("qty")) - 1, 0.0),
            "views_24h": _num(fact.get("views_24h")),
        }

    @cached_property
    def _active(self) -> tuple[tuple[str, float], ...]:
        """(feature, weight) of the weights that count, in the order of ``weights``."""
        return tuple((name, weight) for name, weight in self.weights.items() if weight)

    def score(self, fact: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
        """Score in [0, 1] (logistic) and each feature's contribution to the logit."""
        values = self.features(fact)
        contributions = {
            name: round(weight * values.get(name, 0.0), 4) for name, weight in self._active
        }
        logit = self.bias + sum(contributions.values())
        return round(1 / (1 + math.exp(-max(min(logit, 60), -60))), 4), contributions


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_hour(at_ms: int, timezone: str | None) -> int:
    zone = _zone(timezone) if timezone else None
    return datetime.fromtimestamp(at_ms / 1000, tz=zone or UTC).hour


class RulesDecider:
    """Matches a fact against its pattern's rules and explains the choice."""

    def __init__(
        self,
        rules: Sequence[LoadedRule],
        intent: IntentModel,
        version: str,
        *,
        remember: bool = True,
    ) -> None:
        self.version = version
        self.intent = intent
        self.rules = {rule.id: rule for rule in rules}
        #: the fields each rule's condition reads (shown in every explanation)
        self.reads = {rule.id: tuple(fields(rule.condition)) for rule in rules}
        self.matchers: dict[str, RuleMatcher] = {}
        for pattern in PATTERNS:
            applicable = {r.id: r.condition for r in rules if r.pattern in (None, pattern)}
            self.matchers[pattern] = RuleMatcher(applicable, remember=remember)

    def enrich(self, fact: Fact) -> dict[str, Any]:
        """The fact's fields plus what the decider derives: intent, hour, dwell minutes."""
        values = dict(fact.fields)
        values["intent"], values["intent_contributions"] = self.intent.score(values)
        values["hour"] = local_hour(fact.at_ms, values.get("timezone"))
        category = values.get("category")
        if isinstance(category, str):
            values["category_root"] = category.partition(".")[0]
        if isinstance(values.get("dwell_ms"), int | float):
            values["dwell_minutes"] = values["dwell_ms"] / 60_000
        return values

    def decide(self, fact: Fact) -> Decision | None:
        matcher = self.matchers.get(fact.pattern)
        if matcher is None:
            return None
        values = self.enrich(fact)
        matched = matcher.match(values)
        if not matched:
            return None
        ordered = sorted(
            (self.rules[r] for r in matched), key=lambda r: (-r.priority, r.cost_rank, r.id)
        )
        winner = ordered[0]
        mode = winner.mode if winner.enabled else "disabled"
        explanation = {
            "rule": winner.id,
            "ruleset": winner.ruleset,
            "ruleset_version": self.version,
            "priority": winner.priority,
            "when": winner.when,
            "read": {name: values.get(name) for name in self.reads[winner.id]},
            "intent": {"score": values["intent"], "contributions": values["intent_contributions"]},
            "also_matched": [r.id for r in ordered[1:]],
            "mode": mode,
        }
        return Decision(
            rule_id=winner.id,
            ruleset_version=self.version,
            type=winner.type,
            channel=winner.channel,
            params=dict(winner.params),
            explanation=explanation,
            mode=mode,
            ruleset=winner.ruleset,
            bucket=winner.bucket,
            cost=winner.cost,
            unit=winner.unit,
            ttl_ms=winner.ttl_ms,
        )
