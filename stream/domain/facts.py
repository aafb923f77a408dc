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
