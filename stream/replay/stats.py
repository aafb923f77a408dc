"""What the HTML report plots about the log itself: the funnel and cart dwell times.

Collected from the raw events beside the core (only when a report is asked for:
it reads each event a second time).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream.domain.engine import Record
from stream.domain.timeutil import parse_ts

#: The golden flow's steps, in order, and the event types that show a shopper reached each.
FUNNEL = (
    ("product detail", ("detail_view",)),
    ("cart", ("cart_add",)),
    ("checkout", ("checkout_start",)),
    ("submitted", ("checkout_submit", "order_created")),
    ("cashier", ("cashier_enter", "payment_failed", "payment_success")),
    ("paid", ("payment_success", "order_paid")),
)

#: most dwell samples kept per category (the first ones, in log order)
MAX_SAMPLES = 20_000


@dataclass
class LogStats:
    #: step -> shoppers who reached it
    reached: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: category -> minutes items stayed in the cart before leaving it (checkout or removal)
    dwell_minutes: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    #: category -> items still in the cart at the log's end
    still_in_cart: Counter[str] = field(default_factory=Counter)
    _cart: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)

    def observe_batch(self, records: Iterable[Record]) -> None:
        for rec in records:
            try:
                event = orjson.loads(rec.value)
                user, kind = event["user_id"], event["type"]
                ts = parse_ts(event["ts"])
            except Exception:  # noqa: S112 - bad lines are the core's to report
                continue
            if not isinstance(user, str) or not isinstance(kind, str):
                continue
            self._observe(user, kind, ts, event)

    def _observe(self, user: str, kind: str, ts: int, event: dict[str, Any]) -> None:
        for step, kinds in FUNNEL:
            if kind in kinds:
                self.reached[step].add(user)
        if kind == "cart_add":
            sku, category = event.get("sku"), event.get("category")
            if isinstance(sku, str) and isinstance(category, str):
                self._cart.setdefault((user, sku), (ts, category))
        elif kind == "cart_remove":
            self._leave(user, event.get("sku"), ts)
        elif kind in ("checkout_start", "order_created"):
            for item in event.get("items") or ():
                if isinstance(item, dict):
                    self._leave(user, item.get("sku"), ts)

    def _leave(self, user: str, sku: Any, ts: int) -> None:
        entry = self._cart.pop((user, sku), None) if isinstance(sku, str) else None
        if entry is not None:
            added, category = entry
            samples = self.dwell_minutes[category]
            if len(samples) < MAX_SAMPLES:
                samples.append(max(0.0, (ts - added) / 60_000))

    def finish(self) -> None:
        for _, category in self._cart.values():
            self.still_in_cart[category] += 1
        self._cart.clear()

    def funnel(self) -> list[tuple[str, int]]:
        return [(step, len(self.reached.get(step, ()))) for step, _ in FUNNEL]
