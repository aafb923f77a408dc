"""Pydantic schema of the rule files (what rule authors may write)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from stream.decide.durations import parse_duration
from stream.domain.facts import PATTERNS

Duration = Annotated[int, BeforeValidator(parse_duration)]

InterventionType = Literal[
    "category_coupon", "payment_coupon", "points", "reminder", "retention_offer", "cross_sell"
]
Channel = Literal["push", "sms", "in_app"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CartStallTiming(Strict):
    default_dwell: Duration = Field(description="dwell for categories not listed")
    dwell: dict[str, Duration] = Field(default_factory=dict, description="category -> dwell")


class AfterTiming(Strict):
    after: Duration = Field(description="how long the shopper may stay at this step")


class PaymentStallTiming(AfterTiming):
    by_failure_reason: dict[str, Duration] = Field(
        default_factory=dict, description="failure reason -> wait after a failed payment"
    )


class UnpaidOrderTiming(Strict):
    lead: Duration = Field(description="how long before the pay deadline to act")


class TimingFile(Strict):
    """rules/timing.yaml"""

    cart_stall: CartStallTiming
    checkout_abandon: AfterTiming
    payment_stall: PaymentStallTiming
    unpaid_order: UnpaidOrderTiming


class CategoryGraphFile(Strict):
    """rules/category_graph.yaml"""

    companions: dict[str, list[str]] = Field(default_factory=dict)


class Then(Strict):
    """What a rule does: the intervention to send."""

    type: InterventionType
    channel: Channel
    params: dict[str, Any] = Field(default_factory=dict)


class Rule(Strict):
    id: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9_.:-]+$")
    description: str = ""
    owner: str = Field(min_length=1, description="who answers for this rule")
    priority: int = Field(ge=0, le=1_000_000, description="the highest matching priority wins")
    when: str = Field(description="condition over the fact (rules/README.md)")
    then: Then
    enabled: bool = True
    mode: Literal["live", "shadow"] = "live"


class RulesetFile(Strict):
    """rules/rulesets/*.yaml: the rules of one pattern (or theme)."""

    ruleset: str = Field(min_length=1)
    pattern: str | None = Field(None, description="only facts of this pattern reach the rules")
    description: str = ""
    rules: list[Rule]

    @field_validator("pattern")
    @classmethod
    def _known_pattern(cls, value: str | None) -> str | None:
        if value is not None and value not in PATTERNS:
            raise ValueError(f"unknown pattern {value!r}; expected one of {', '.join(PATTERNS)}")
        return value


class IntentFile(Strict):
    """rules/intent.yaml: weights of the intent score's features."""

    bias: float = 0.0
    weights: dict[str, float] = Field(default_factory=dict)


class Expectation(Strict):
    rule: str | None = None
    type: InterventionType | None = None
    channel: Channel | None = None


class RuleTestCase(Strict):
    name: str = Field(min_length=1)
    fact: dict[str, Any]
    expect: Expectation | Literal["none"]


class RuleTestFile(Strict):
    """rules/tests/*.yaml: facts and the decision rule authors expect for them."""

    cases: list[RuleTestCase]
