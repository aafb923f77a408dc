"""Pydantic schema of the rule files (what rule authors may write)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    bucket: str | None = Field(
        None, description="budget bucket it draws from (guardrails.yaml); default: the ruleset's"
    )


class HoldoutSpec(Strict):
    share: float = Field(ge=0, le=1, description="share of shoppers held out as control")
    salt: str | None = Field(None, description="hash salt; default: the ruleset name")


class RulesetFile(Strict):
    """rules/rulesets/*.yaml: the rules of one pattern (or theme)."""

    ruleset: str = Field(min_length=1)
    pattern: str | None = Field(None, description="only facts of this pattern reach the rules")
    description: str = ""
    bucket: str | None = Field(None, description="budget bucket of rules that name none")
    holdout: HoldoutSpec | None = Field(None, description="overrides guardrails.yaml holdout")
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


class CapSpec(Strict):
    pattern: str = Field("any", description="a pattern, or 'any' for all patterns together")
    limit: int = Field(ge=0, description="most interventions in the window")
    window: Duration = Field(description="rolling window of event time, e.g. 24h")

    @field_validator("pattern")
    @classmethod
    def _known_pattern(cls, value: str) -> str:
        if value != "any" and value not in PATTERNS:
            raise ValueError(f"unknown pattern {value!r}; expected any or {', '.join(PATTERNS)}")
        return value


class QuietHoursSpec(Strict):
    start: int = Field(ge=0, le=23, description="local hour quiet hours begin")
    end: int = Field(ge=0, le=23, description="local hour they end (exclusive)")


class StackingSpec(Strict):
    enabled: bool = Field(True, description="at most one active offer per order or journey")
    offer_ttl: Duration = Field(24 * 3_600_000, description="how long an offer stays active")


class AttributionSpec(Strict):
    window: Duration = Field(24 * 3_600_000, description="default attribution window")
    by_pattern: dict[str, Duration] = Field(default_factory=dict)

    @field_validator("by_pattern")
    @classmethod
    def _known_patterns(cls, value: dict[str, int]) -> dict[str, int]:
        for name in value:
            if name not in PATTERNS:
                raise ValueError(f"unknown pattern {name!r}; expected one of {', '.join(PATTERNS)}")
        return value


class BudgetsSpec(Strict):
    slice_share: float = Field(
        0.5, ge=0, le=1, description="share of each budget split into fixed per-partition slices"
    )
    buckets: dict[str, dict[str, Annotated[float, Field(ge=0)]]] = Field(
        default_factory=dict, description="bucket -> unit (USD, points, ...) -> daily budget"
    )


class GuardrailsFile(Strict):
    """rules/guardrails.yaml"""

    default_timezone: str = Field("UTC", description="zone of shoppers who name none")
    min_intent: float = Field(0.0, ge=0, le=1, description="below this intent: low_intent")
    holdout: HoldoutSpec = HoldoutSpec(share=0.10)
    caps: list[CapSpec] = Field(default_factory=list)
    stacking: StackingSpec = StackingSpec()
    quiet_hours: dict[Channel, QuietHoursSpec] = Field(default_factory=dict)
    max_defer: Duration = Field(12 * 3_600_000, description="longest quiet-hours deferral")
    attribution: AttributionSpec = AttributionSpec()
    budgets: BudgetsSpec = BudgetsSpec()

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin"
            ) from None
        return value
