"""Generated shopper traffic in event time (seeded, no clock reads).

Each shopper views an item, adds it to the cart and then, with per-category
odds, removes it, walks away, or checks out (soon, or after a stall). Checkouts
may be dropped; orders may be paid at once, after a failed payment, late, or
never; some shoppers ask to cancel. A small share of messages is malformed on
purpose so the dead-letter path shows up too.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any

from stream.domain.events import TYPE_KIND
from stream.domain.timeutil import MINUTE, SECOND, format_ts


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    price_range: tuple[float, float]
    #: odds of: remove, checkout soon, checkout after a stall, walk away
    odds: tuple[float, float, float, float]
    #: a category often bought along (makes cross-sell chances), or ""
    companion: str = ""


CATEGORIES = (
    Category("fresh_food", (2, 30), (0.10, 0.45, 0.10, 0.35)),
    Category("mother_baby.diapers", (8, 90), (0.10, 0.40, 0.15, 0.35), "mother_baby.wipes"),
    Category(
        "home_cleaning.detergent", (3, 40), (0.10, 0.40, 0.15, 0.35), "home_cleaning.softener"
    ),
    Category("fashion.shoes", (15, 200), (0.20, 0.30, 0.15, 0.35), "fashion.socks"),
    Category(
        "electronics.smartphone", (150, 1500), (0.15, 0.30, 0.20, 0.35), "electronics.accessories"
    ),
    Category("books", (5, 60), (0.10, 0.35, 0.20, 0.35)),
)

FAILURE_REASONS = ("insufficient_funds", "card_declined", "bank_timeout")


class ShopperSim:
    """A heap of future events; spawn shoppers, then pop what is due by event time."""

    def __init__(
        self, seed: int, dwell_ms: dict[str, int], malformed_share: float = 0.01, prefix: str = "u"
    ):
        self.rng = random.Random(seed)  # noqa: S311 - traffic, not secrets
        self.dwell_ms = dwell_ms
        self.malformed_share = malformed_share
        self.prefix = prefix
        self._heap: list[tuple[int, int, str, bytes | dict[str, Any]]] = []
        self._seq = 0
        self.shoppers = 0

    def _push(self, ts: int, kind: str, event: bytes | dict[str, Any]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (ts, self._seq, kind, event))

    def _event(self, type_: str, user: str, ts: int, **fields: Any) -> None:
        self._seq += 1
        body = {
            "event_id": f"{self.prefix}e{self._seq}",
            "type": type_,
            "user_id": user,
            "ts": format_ts(ts),
        }
        body.update(fields)
        self._push(ts, TYPE_KIND[type_], body)

    def _dwell(self, category: str) -> int:
        key = category
        while key:
            if key in self.dwell_ms:
                return self.dwell_ms[key]
            key = key.rpartition(".")[0]
        return 60 * MINUTE

    def spawn(self, at_ms: int) -> str:
        """Schedule one new shopper's whole visit, starting at ``at_ms``; return the user id."""
        rng = self.rng
        self.shoppers += 1
        user = f"{self.prefix}{self.shoppers:06d}"
        cat = rng.choice(CATEGORIES)
        sku = f"{cat.name.split('.')[-1][:4]}-{rng.randrange(1, 400):04d}"
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
        items = [item]
        if cat.companion and rng.random() < 0.3:  # bought along: no cross-sell chance
            extra = {"sku": f"{sku}-x", "category": cat.companion, "price": 4.0, "qty": 1}
            self._event("cart_add", user, t + 2 * SECOND, **extra)
            items.append(extra)
        if rng.random() < self.malformed_share:
            self._malformed(user, t)
        dwell = self._dwell(cat.name)
        choice = rng.choices(range(4), weights=cat.odds)[0]
        if choice == 0:  # removes it before the dwell
            self._event("cart_remove", user, t + int(rng.uniform(0.1, 0.8) * dwell), sku=sku)
        elif choice in (1, 2):  # checks out: before the dwell, or after a stall
            wait = rng.uniform(0.05, 0.8) * dwell if choice == 1 else rng.uniform(1.2, 2.5) * dwell
            self._checkout(user, t + int(wait) + 3 * SECOND, items)
        return user

    def _checkout(self, user: str, t: int, items: list[dict[str, Any]]) -> None:
        rng = self.rng
        cid, order = f"c-{user}", f"o-{user}"
        amount = round(sum(i["price"] for i in items), 2)
        self._event("checkout_start", user, t, checkout_id=cid, items=items, amount=amount)
        if rng.random() < 0.15:  # drops the checkout
            return
        t += int(rng.uniform(20, 120) * SECOND)
        self._event("checkout_submit", user, t, checkout_id=cid, order_id=order)
        t += SECOND
        self._event(
            "order_created",
            user,
            t,
            order_id=order,
            checkout_id=cid,
            items=items,
            amount=amount,
            pay_deadline=format_ts(t + 30 * MINUTE),
        )
        fate = rng.random()
        if fate < 0.08:  # asks to cancel; half of them are kept by the retention offer
            t += int(rng.uniform(1, 10) * MINUTE)
            self._event("order_cancel_requested", user, t, order_id=order, reason="changed_mind")
            if rng.random() < 0.5:
                self._event("order_cancelled", user, t + 2 * MINUTE, order_id=order)
            return
        t += int(rng.uniform(10, 90) * SECOND)
        self._event("cashier_enter", user, t, order_id=order, amount=amount, method="card")
        if fate < 0.25:  # a failed payment first
            t += int(rng.uniform(10, 60) * SECOND)
            self._event(
                "payment_failed",
                user,
                t,
                order_id=order,
                amount=amount,
                method="card",
                reason=rng.choice(FAILURE_REASONS),
            )
            if rng.random() < 0.4:  # gives up: payment stall, then unpaid order
                return
            t += int(rng.uniform(1, 8) * MINUTE)
        elif fate < 0.32:  # leaves the cashier without paying
            return
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

    def drain(self) -> list[tuple[str, str, bytes | dict[str, Any]]]:
        """Pop every scheduled event, in event-time order."""
        return self.due(2**62)
