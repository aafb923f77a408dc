"""The guardrail stage: what happens to a decision once a rule chose it.

Checked in this order, the first that holds wins: the rule is shadowed or
disabled; the intent is too low; a frequency cap is reached; another offer is
active for the same order or journey (no stacking); quiet hours would hold the
command too long; the budget cannot pay for it. A decision that passes all of
them reaches an arm: the control group (held out, recorded, nothing sent) or
treatment (sent now, or deferred to the end of quiet hours).

Both arms pass the same checks, so they are comparable; a control decision
counts towards caps and stacking as if it had been sent, but spends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.domain.budget import PartitionBudget, budget_day
from stream.domain.facts import Decision, Fact
from stream.domain.guardrails import Guardrails, capped, in_holdout, stacked
from stream.domain.journey import Journey

ORDER_SCOPED = frozenset({"payment_stall", "unpaid_order", "cancel_request"})


@dataclass(frozen=True, slots=True)
class Verdict:
    #: emitted, deferred, suppressed, or parked (waiting for a budget claim)
    result: str
    reason: str | None = None
    #: treatment, control, or None (suppressed before reaching an arm)
    arm: str | None = None
    release_ms: int | None = None


def budgeted(decision: Decision, guardrails: Guardrails) -> bool:
    """Does the decision draw on a budget? (The rule checker makes every costed rule
    name a budgeted bucket; without budgets configured nothing is budgeted.)"""
    bucket = guardrails.buckets.get(decision.bucket or "")
    return decision.cost > 0 and bucket is not None and decision.unit in bucket.daily


def offer_scope(fact: Fact) -> str:
    """What an offer is "per": the order for order patterns, else the shopper's journey."""
    if fact.pattern in ORDER_SCOPED:
        return f"order:{fact.subject}"
    return "journey"


def judge(
    journey: Journey,
    fact: Fact,
    decision: Decision,
    guardrails: Guardrails,
    budget: PartitionBudget,
) -> Verdict:
    if decision.mode != "live":
        return Verdict("suppressed", decision.mode)
    intent = decision.explanation.get("intent", {}).get("score")
    if isinstance(intent, int | float) and intent < guardrails.min_intent:
        return Verdict("suppressed", "low_intent")
    at = fact.at_ms
    history = ((e[0], e[1]) for e in journey.sent)
    if guardrails.caps and capped(history, fact.pattern, at, guardrails.caps):
        return Verdict("suppressed", "cap")
    if (
        guardrails.stacking
        and decision.cost > 0
        and stacked(((e[2], e[3]) for e in journey.sent), offer_scope(fact), at)
    ):
        return Verdict("suppressed", "stacking")
    release: int | None = None
    window = guardrails.quiet_hours.get(decision.channel)
    if window is not None:
        timezone = journey.timezone or fact.fields.get("timezone")
        release = window.release_ms(at, timezone, guardrails.default_timezone)
        if release is not None:
            deadline = fact.fields.get("pay_deadline_ms")
            too_late = (
                release - at > guardrails.max_defer_ms
                or fact.pattern == "cancel_request"  # must land before the cancellation
                or (isinstance(deadline, int) and release >= deadline)
            )
            if too_late:
                return Verdict("suppressed", "quiet_hours")
    if budgeted(decision, guardrails):
        assert decision.bucket is not None and decision.unit is not None
        day = budget_day(at, guardrails.default_timezone)
        if not budget.can_spend(decision.bucket, decision.unit, day, decision.cost):
            if budget.awaiting(decision.bucket, decision.unit, day):
                return Verdict("parked")  # decided again once the ledger answers
            return Verdict("suppressed", "budget")
    holdout = guardrails.holdout(decision.ruleset)
    if in_holdout(fact.user_id, holdout.salt, holdout.share):
        return Verdict("suppressed", "holdout", "control", release)
    return Verdict("deferred" if release is not None else "emitted", None, "treatment", release)
