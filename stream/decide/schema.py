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


class Intervention(Strict):
    id: str = Field(min_length=1, description="rule id shown on every command")
    description: str = ""
    type: InterventionType
    channel: Channel
    params: dict[str, Any] = Field(default_factory=dict)


class DefaultsFile(Strict):
    """rules/defaults.yaml: the intervention each pattern gets when nothing else decides."""

    defaults: dict[str, Intervention]

    @field_validator("defaults")
    @classmethod
    def _known_patterns(cls, value: dict[str, Intervention]) -> dict[str, Intervention]:
        unknown = sorted(set(value) - set(PATTERNS))
        if unknown:
            raise ValueError(
                f"unknown pattern {unknown[0]!r}; expected one of {', '.join(PATTERNS)}"
            )
        return value
