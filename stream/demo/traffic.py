"""Generated shopper traffic in event time (seeded, no clock reads).

Each shopper views an item, adds it to the cart and then, with per-category
odds, removes it, checks out and pays quickly, checks out late, or leaves it in
the cart. A small share of messages is malformed on purpose so the dead-letter
path shows up too.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any

from stream.domain.timeutil import MINUTE, SECOND, format_ts


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    price_range: tuple[float, float]
    #: odds of: remove, checkout soon, checkout late (after a stall), walk away
    odds: tuple[float, float, float, float]
    #: typical minutes before a shopper who checks out does so
    think_minutes: float


CATEGORIES = (
    Category("fresh_food", (2, 30), (0.10, 0.45, 0.10, 0.35), 4),
    Category("mother_baby", (8, 90), (0.10, 0.40, 0.15, 0.35), 12),
    Category("home_cleaning", (3, 40), (0.10, 0.40, 0.15, 0.35), 15),
    Category("fashion", (15, 200), (0.20, 0.30, 0.15, 0.35), 30),
    Category("electronics", (30, 1500), (0.15, 0.30, 0.20, 0.35), 45),
    Category("books", (5, 60), (0.10, 0.35, 0.20, 0.35), 60),
)

#: Topic kind of each event type (mirrors the event contract).
KIND = {
    "detail_view": "cart",
    "cart_add": "cart",
    "cart_remove": "cart",
    "checkout_start": "checkout",
    "checkout_submit": "checkout",
    "cashier_enter": "cashier",
    "payment_success": "cashier",
    "order_created": "order",
    "order_paid": "order",
}


class ShopperSim:
    """A heap of future events; spawn shoppers, then pop what is due by event time."""

    def __init__(self, seed: int, dwell_ms: dict[str, int], malformed_share: float = 0.01):
        self.rng = random.Random(seed)  # noqa: S311 - traffic, not secrets
        self.dwell_ms = dwell_ms
        self.malformed_share = malformed_share
        self._heap: list[tuple[int, int, str, bytes | dict[str, Any]]] = []
        self._seq = 0
        self.shoppers = 0

    def _push(self, ts: int, kind: str, event: bytes | dict[str, Any]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (ts, self._seq, kind, event))

    def _event(self, type_: str, user: str, ts: int, **fields: Any) -> None:
        self._seq += 1
        body = {"event_id": f"e{self._seq}", "type": type_, "user_id": user, "ts": format_ts(ts)}
        body.update(fields)
        self._push(ts, KIND[type_], body)

    def spawn(self, at_ms: int) -> None:
        rng = self.rng
        self.shoppers += 1
        user = f"u{self.shoppers:06d}"
        cat = rng.choice(CATEGORIES)
        sku = f"{cat.name[:3]}-{rng.randrange(1, 400):04d}"
        price = round(rng.uniform(*cat.price_range), 2)
        item = {"sku": sku, "category": cat.name, "price": price, "qty": 1}
        t = at_ms
        self._event("detail_view", user, t, sku=sku, category=cat.name, price=price)
        t += int(rng.expovariate(1 / 40) * SECOND) + SECOND
        self._event(
            "cart_add",
            user,
            t,
            sku=sku,
            category=cat.name,
            price=price,
            qty=1,
            segment=rng.choice(("new", "regular", "vip")),
        )
        if rng.random() < self.malformed_share:
            self._malformed(user, t)
        dwell = self.dwell_ms.get(cat.name, 60 * MINUTE)
        choice = rng.choices(range(4), weights=cat.odds)[0]
        if choice == 0:  # removes it before the dwell
            self._event("cart_remove", user, t + int(rng.uniform(0.1, 0.8) * dwell), sku=sku)
        elif choice in (1, 2):  # checks out: before the dwell, or after a stall
            wait = rng.uniform(0.05, 0.8) * dwell if choice == 1 else rng.uniform(1.2, 2.5) * dwell
            self._checkout(user, t + int(wait), item)

    def _checkout(self, user: str, t: int, item: dict[str, Any]) -> None:
        rng = self.rng
        order = f"o-{user}"
        amount = item["price"]
        self._event("checkout_start", user, t, checkout_id=f"c-{user}", items=[item], amount=amount)
        t += int(rng.uniform(20, 120) * SECOND)
        self._event("checkout_submit", user, t, checkout_id=f"c-{user}", order_id=order)
        self._event(
            "order_created",
            user,
            t + SECOND,
            order_id=order,
            items=[item],
            amount=amount,
            pay_deadline=format_ts(t + 30 * MINUTE),
        )
        t += int(rng.uniform(10, 90) * SECOND)
        self._event("cashier_enter", user, t, order_id=order, amount=amount, method="card")
        self._event(
            "payment_success", user, t + 5 * SECOND, order_id=order, amount=amount, method="card"
        )
        self._event("order_paid", user, t + 6 * SECOND, order_id=order, amount=amount)

    def _malformed(self, user: str, t: int) -> None:
        bad: list[bytes] = [
            b'{"type": "cart_add", "user_id": "' + user.encode() + b'", "ts": ',  # truncated
            b"not json at all",
            b'{"event_id": "x", "type": "cart_teleport", "user_id": "u", "ts": 1764000000000}',
            b'{"event_id": "y", "type": "cart_add", "user_id": "u", "ts": 1764000000000, '
            b'"sku": "s", "category": "books", "price": "free"}',
        ]
        self._push(t, "cart", self.rng.choice(bad))

    def due(self, until_ms: int) -> list[tuple[str, str, bytes | dict[str, Any]]]:
        """Pop every event with event time <= until_ms: (kind, user key, event)."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= until_ms:
            _, _, kind, event = heapq.heappop(heap)
            key = event["user_id"] if isinstance(event, dict) else "malformed"
            out.append((kind, key, event))
        return out
