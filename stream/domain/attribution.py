"""Attribution: did the shopper do what the decision aimed at, within its window?

After each decision that reached an arm (a command sent, or held back for the
control group) the journey keeps a *watch*: what conversion the pattern aims at,
and until when. The journey feeds it its order events in event time:

==================  ==========================================================
pattern             converted when
==================  ==========================================================
cart_stall          an order holding the stalled sku is paid
checkout_abandon    the order of that checkout (or one holding its items) is paid
payment_stall       the order is paid
unpaid_order        the order is paid
cross_sell          a paid order holds one of the missing companion categories
cancel_request      the window ends without the order being cancelled
==================  ==========================================================

A paid order is credited to one decision only, the latest before it; the other
watches it satisfies close as lost, naming the decision that got the credit.
Windows are half-open: ``[decided at, decided at + window)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stream.domain.timeutil import format_ts

# Watch layout: [id, pattern, rule, arm, at_ms, until_ms, subject, extra, value]
W_ID, W_PATTERN, W_RULE, W_ARM, W_AT, W_UNTIL, W_SUBJECT, W_EXTRA, W_VALUE = range(9)

PAID_PATTERNS = frozenset(
    {"cart_stall", "checkout_abandon", "payment_stall", "unpaid_order", "cross_sell"}
)
ORDER_PATTERNS = frozenset({"payment_stall", "unpaid_order", "cancel_request"})


def new_watch(
    decision_id: str,
    pattern: str,
    rule: str | None,
    arm: str,
    at_ms: int,
    window_ms: int,
    fields: dict[str, Any],
    subject: str,
) -> list[Any]:
    """A watch for a decision; ``fields`` are the fact's fields (what it aimed at)."""
    extra: list[str] = []
    value = fields.get("amount")
    if pattern == "checkout_abandon":
        extra = list(fields.get("skus") or ())
    elif pattern == "cross_sell":
        extra = list(fields.get("missing_categories") or ())
    elif pattern == "cart_stall":
        value = fields.get("price")
    return [decision_id, pattern, rule, arm, at_ms, at_ms + window_ms, subject, extra, value]


def _category_in(category: str, wanted: Sequence[str]) -> bool:
    return any(category == w or category.startswith(w + ".") for w in wanted)


def satisfied_by_paid(
    watch: list[Any], order_id: str, skus: Sequence[str], cats: Sequence[str], checkout: str | None
) -> bool:
    """Does paying this order meet the watch's aim?"""
    pattern, subject = watch[W_PATTERN], watch[W_SUBJECT]
    if pattern == "cart_stall":
        return subject in skus
    if pattern == "checkout_abandon":
        if checkout is not None:
            return bool(checkout == subject)
        return any(sku in skus for sku in watch[W_EXTRA])
    if pattern in ("payment_stall", "unpaid_order"):
        return bool(subject == order_id)
    if pattern == "cross_sell":
        return any(_category_in(c, watch[W_EXTRA]) for c in cats)
    return False


def outcome(
    user_id: str,
    watch: list[Any],
    result: str,
    at_ms: int,
    *,
    gmv: float = 0.0,
    order_id: str | None = None,
    credited_to: str | None = None,
) -> dict[str, Any]:
    """The attribution record for the outcomes topic."""
    return {
        "kind": "attribution",
        "id": watch[W_ID],
        "user_id": user_id,
        "pattern": watch[W_PATTERN],
        "rule": watch[W_RULE],
        "arm": watch[W_ARM],
        "result": result,
        "gmv": round(gmv, 2),
        "at_ms": at_ms,
        "at": format_ts(at_ms),
        "decided_at_ms": watch[W_AT],
        "order_id": order_id,
        "credited_to": credited_to,
    }


def on_paid(
    user_id: str,
    watches: list[list[Any]],
    at_ms: int,
    order_id: str,
    skus: Sequence[str],
    cats: Sequence[str],
    checkout: str | None,
    amount: float | None,
) -> list[dict[str, Any]]:
    """An order was paid at ``at_ms``: credit the latest watch it satisfies, close the
    others it satisfies as lost. Closed watches are removed from ``watches``."""
    hits = [
        w
        for w in watches
        if w[W_PATTERN] in PAID_PATTERNS
        and w[W_AT] <= at_ms < w[W_UNTIL]
        and satisfied_by_paid(w, order_id, skus, cats, checkout)
    ]
    if not hits:
        return []
    winner = max(hits, key=lambda w: (w[W_AT], w[W_ID]))
    records = [outcome(user_id, winner, "converted", at_ms, gmv=amount or 0.0, order_id=order_id)]
    records.extend(
        outcome(user_id, w, "lost", at_ms, order_id=order_id, credited_to=winner[W_ID])
        for w in sorted(hits, key=lambda w: (w[W_AT], w[W_ID]))
        if w is not winner
    )
    closed = {id(w) for w in hits}
    watches[:] = [w for w in watches if id(w) not in closed]
    return records


def on_cancelled(
    user_id: str, watches: list[list[Any]], at_ms: int, order_id: str
) -> list[dict[str, Any]]:
    """The order was cancelled: every watch on it within its window is lost."""
    hits = [
        w
        for w in watches
        if w[W_PATTERN] in ORDER_PATTERNS
        and w[W_SUBJECT] == order_id
        and w[W_AT] <= at_ms < w[W_UNTIL]
    ]
    closed = {id(w) for w in hits}
    watches[:] = [w for w in watches if id(w) not in closed]
    return [outcome(user_id, w, "lost", at_ms, order_id=order_id) for w in hits]


def on_window_end(user_id: str, watch: list[Any]) -> dict[str, Any]:
    """The window closed with nothing credited: lost, except a retention offer whose
    order was not cancelled (the shopper stayed)."""
    if watch[W_PATTERN] == "cancel_request":
        value = watch[W_VALUE]
        gmv = float(value) if isinstance(value, int | float) else 0.0
        return outcome(
            user_id, watch, "converted", watch[W_UNTIL], gmv=gmv, order_id=watch[W_SUBJECT]
        )
    return outcome(user_id, watch, "lost", watch[W_UNTIL])
