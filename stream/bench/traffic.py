"""Steady synthetic traffic for benchmarks: many shoppers coming back over weeks."""

from __future__ import annotations

import random
from collections.abc import Iterator

import orjson

from stream.domain.timeutil import DAY, format_ts

DEVICES = ("ios", "android", "web")
CATEGORIES = ("fresh_food", "books", "electronics.smartphone", "fashion.shoes", "mother_baby")


def steady_events(
    count: int,
    shoppers: int,
    start_ms: int,
    span_ms: int = 30 * DAY,
    seed: int = 1,
    id_prefix: str = "b",
    context: bool = False,
) -> Iterator[tuple[str, bytes, bytes]]:
    """``count`` events (kind, key, value) from ``shoppers`` shoppers, in time order.

    Event ids are ``id_prefix`` + the event's index: give a second stream for the
    same shoppers another prefix, or its events repeat ids and count as duplicates.
    ``context`` adds what upstream events usually carry besides (session, device,
    app version: ignored by the engine), which brings the mean event to ~200 bytes.
    """
    rng = random.Random(seed)  # noqa: S311 - traffic, not secrets
    step = span_ms / count
    for i in range(count):
        user = f"s{rng.randrange(shoppers):07d}"
        ts = start_ms + int(i * step)
        sku = f"k{rng.randrange(500)}"
        roll = rng.random()
        body: dict[str, object] = {
            "event_id": f"{id_prefix}{i}",
            "user_id": user,
            "ts": format_ts(ts),
        }
        if roll < 0.40:
            kind = "cart"
            body.update(
                type="cart_add",
                sku=sku,
                category=rng.choice(CATEGORIES),
                price=round(rng.uniform(2, 300), 2),
                qty=1,
            )
        elif roll < 0.50:
            kind = "cart"
            body.update(type="cart_remove", sku=sku)
        elif roll < 0.75:
            kind = "cart"
            body.update(type="cart_view")
        elif roll < 0.85:
            kind = "checkout"
            body.update(
                type="checkout_start",
                checkout_id=f"c-{user}-{i // 50}",
                items=[{"sku": sku, "category": "books", "price": 9.5, "qty": 1}],
            )
        elif roll < 0.90:
            kind = "order"
            body.update(
                type="order_created",
                order_id=f"o-{user}",
                items=[{"sku": sku}],
                amount=9.5,
                pay_deadline=format_ts(ts + DAY // 48),
            )
        elif roll < 0.95:
            kind = "cashier"
            body.update(type="cashier_enter", order_id=f"o-{user}", amount=9.5, method="card")
        else:
            kind = "cashier"
            body.update(type="payment_success", order_id=f"o-{user}")
        if context:
            body.update(
                session_id=f"ss-{user}-{i // 7919:06d}",
                device=DEVICES[i % len(DEVICES)],
                app_version="7.12.3",
            )
        yield kind, user.encode(), orjson.dumps(body)
