"""Facts the journey detects, decisions made about them, and the commands that follow."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from stream.domain.timeutil import format_ts

PATTERNS = (
    "cart_stall",
    "checkout_abandon",
    "payment_stall",
    "unpaid_order",
    "cancel_request",
    "cross_sell",
)


@dataclass(slots=True, frozen=True)
class Fact:
    """A detected pattern: what a decision needs to know, as a flat field map.

    ``subject`` names what the fact is about (a sku, a checkout or order id) and
    ``trigger_event_id`` the event that armed it; with the user and the pattern
    they make the intervention id deterministic.
    """

    pattern: str
    user_id: str
    at_ms: int
    subject: str
    trigger_event_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    #: wall-clock time the triggering message reached the broker (immediate patterns)
    received_ms: int | None = None

    @property
    def intervention_id(self) -> str:
        key = "\x1f".join((self.user_id, self.pattern, self.subject, self.trigger_event_id))
        return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def fact_to_list(fact: Fact) -> list[Any]:
    """A fact as plain data (kept in a journey snapshot while it waits)."""
    return [
        fact.pattern,
        fact.at_ms,
        fact.subject,
        fact.trigger_event_id,
        fact.fields,
        fact.received_ms,
        fact.user_id,
    ]


def fact_from_list(raw: list[Any]) -> Fact:
    pattern, at_ms, subject, trigger, fields, received_ms, user_id = raw
    return Fact(pattern, user_id, at_ms, subject, trigger, fields, received_ms)


@dataclass(slots=True, frozen=True)
class Decision:
    """The intervention chosen for a fact, and why."""

    rule_id: str
    ruleset_version: str
    type: str
    channel: str
    params: dict[str, Any] = field(default_factory=dict)
    explanation: dict[str, Any] = field(default_factory=dict)
    #: live: send it; shadow: decide and record only; disabled: the rule is switched off
    mode: str = "live"
    ruleset: str = ""
    #: the budget bucket it draws from, and what it commits (0 and None: free)
    bucket: str | None = None
    cost: float = 0.0
    unit: str | None = None
    #: how long the offer stays active (no stacking); None: the guardrails' default
    ttl_ms: int | None = None


def build_command(fact: Fact, decision: Decision, decided_at_ms: int) -> dict[str, Any]:
    """The intervention command as published on the interventions topic."""
    f = fact.fields
    return {
        "intervention_id": fact.intervention_id,
        "user_id": fact.user_id,
        "pattern": fact.pattern,
        "sku": f.get("sku"),
        "category": f.get("category"),
        "cart_value": f.get("cart_value"),
        "intervention": {
            "type": decision.type,
            "params": decision.params,
            "channel": decision.channel,
        },
        "rule": {"id": decision.rule_id, "ruleset_version": decision.ruleset_version},
        "fired_at": format_ts(fact.at_ms),
        "decided_at": format_ts(decided_at_ms),
        "fact": f,
        "explanation": decision.explanation,
    }


def decision_record(
    fact: Fact,
    decision: Decision | None,
    result: str,
    *,
    reason: str | None = None,
    arm: str | None = None,
    release_ms: int | None = None,
) -> dict[str, Any]:
    """A decision as recorded on the outcomes topic (every fact gets one)."""
    f = fact.fields
    value = f.get("amount")
    if value is None:
        value = f.get("cart_value")
    return {
        "kind": "decision",
        "id": fact.intervention_id,
        "user_id": fact.user_id,
        "pattern": fact.pattern,
        "rule": decision.rule_id if decision else None,
        "ruleset_version": decision.ruleset_version if decision else None,
        "arm": arm,
        "result": result,
        "reason": reason,
        "at_ms": fact.at_ms,
        "at": format_ts(fact.at_ms),
        "release_at_ms": release_ms,
        "release_at": format_ts(release_ms) if release_ms is not None else None,
        "intervention_type": decision.type if decision else None,
        "channel": decision.channel if decision else None,
        "bucket": decision.bucket if decision else None,
        "cost": decision.cost if decision else 0.0,
        "unit": decision.unit if decision else None,
        "value": value,
        "category": f.get("category"),
    }
