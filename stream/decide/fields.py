"""The fact fields a rule condition may read, with their kinds."""

from __future__ import annotations

from typing import Final

#: field -> (kind, meaning). Kinds: number, text, bool.
FIELDS: Final[dict[str, tuple[str, str]]] = {
    "pattern": ("text", "cart_stall, checkout_abandon, payment_stall, unpaid_order, ..."),
    "sku": ("text", "the stalled item"),
    "category": ("text", "the item's category, or the order's first category"),
    "category_root": (
        "text",
        "the category's first dotted part: electronics for electronics.audio",
    ),
    "price": ("number", "the stalled item's price"),
    "qty": ("number", "how many of the item (repeat adds add up)"),
    "cart_value": ("number", "value of the cart when the pattern fired"),
    "amount": ("number", "checkout or order amount"),
    "items": ("number", "items in the checkout"),
    "dwell_ms": ("number", "how long the shopper stayed at this step, ms"),
    "dwell_minutes": ("number", "the same, in minutes"),
    "prior_stalls": ("number", "patterns detected for this shopper before this one"),
    "prior_interventions": ("number", "interventions sent to this shopper before"),
    "views_24h": ("number", "product and cart views in the 24 hours before"),
    "segment": ("text", "shopper segment from the events, e.g. new, regular, vip"),
    "timezone": ("text", "shopper's IANA time zone"),
    "hour": ("number", "hour of day (0-23) in the shopper's time zone (UTC if unknown)"),
    "intent": ("number", "intent score in [0, 1] (rules/intent.yaml)"),
    "failure_reason": ("text", "reason of the last failed payment"),
    "payment_failures": ("number", "failed payments for the order"),
    "method": ("text", "payment method"),
    "status": ("text", "order status: open, paid, cancelled, cancel_requested"),
    "reason": ("text", "the cancel request's reason"),
    "order_age_ms": ("number", "time from order creation to the cancel request, ms"),
    "ms_to_deadline": ("number", "time left before the order's pay deadline, ms"),
}
