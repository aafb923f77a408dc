"""Per-shopper journey state, stepped in event time, rebuilt from a snapshot.

Shaped like a stateful-operator logic object: :meth:`Journey.on_item` takes an
event, :meth:`Journey.on_notify` advances the journey to a watermark,
:meth:`Journey.notify_at` tells the deadline index when to come back, and
:meth:`Journey.snapshot` / :meth:`Journey.from_snapshot` are the only form the
state takes outside memory (the changelog-backed table stores the snapshot).

Event time, not arrival order: the four input topics interleave arbitrarily, so
an event that changes what a pattern sees is first held in a small per-journey
buffer, ordered by time, and applied when the watermark passes it, interleaved
with the deadlines it could race (a stall fires only if nothing moved the shopper
on before it). Every event the core accepts is at or after the watermark, so the
outcome is the same whatever the batching or topic interleaving.
"""

from __future__ import annotations

import bisect
from typing import Any

from stream.domain.events import Event
from stream.domain.facts import Fact
from stream.domain.timing import Timing

#: ``due`` of a cart line whose stall already fired: one firing per silence.
FIRED = -1

# Cart line (a list, for a compact snapshot): a silence of one sku in the cart.
# [category, price, qty, started_ms, trigger_event_id, due_ms or FIRED]
_CAT, _PRICE, _QTY, _START, _EID, _DUE = range(6)

# Buffered change, ordered by (time, kind, event id, sku): kind 0 = moved on
# (removed, checked out, ordered), 1 = added. Equal times: moving on comes first.
# (ts, kind, event_id, sku, qty, price, category, dwell_ms)
_MOVED, _ADDED = 0, 1

SNAPSHOT_VERSION = 1


class Journey:
    __slots__ = ("cart", "pending", "segment", "stalls", "timezone", "user_id")

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.cart: dict[str, list[Any]] = {}
        self.pending: list[tuple[Any, ...]] = []
        self.stalls = 0
        self.segment: str | None = None
        self.timezone: str | None = None

    # -- stepping -----------------------------------------------------------------

    def on_item(self, ev: Event, timing: Timing) -> list[Fact]:
        """Take one event; return the facts it yields at once (none for stalls)."""
        body = ev.body
        segment = body.get("segment")
        if segment is not None:
            self.segment = segment
        tz = body.get("timezone")
        if tz is not None:
            self.timezone = tz
        kind = ev.type
        if kind == "cart_add":
            category = body["category"]
            self._buffer(
                (
                    ev.ts,
                    _ADDED,
                    ev.event_id,
                    body["sku"],
                    body.get("qty") or 1,
                    float(body["price"]),
                    category,
                    timing.cart_dwell(category),
                )
            )
        elif kind == "cart_remove":
            self._buffer((ev.ts, _MOVED, ev.event_id, body["sku"], 0, 0.0, "", 0))
        elif kind in ("checkout_start", "checkout_submit", "order_created"):
            for item in body.get("items") or ():
                self._buffer((ev.ts, _MOVED, ev.event_id, item["sku"], 0, 0.0, "", 0))
        return []

    def _buffer(self, change: tuple[Any, ...]) -> None:
        pending = self.pending
        if not pending or change >= pending[-1]:
            pending.append(change)
        else:
            bisect.insort(pending, change)

    def notify_at(self) -> int | None:
        """The watermark this journey waits for: > next buffered change or stall."""
        times = [line[_DUE] for line in self.cart.values() if line[_DUE] != FIRED]
        if self.pending:
            times.append(self.pending[0][0])
        return min(times) + 1 if times else None

    def on_notify(self, watermark_ms: int) -> list[Fact]:
        """Advance to the watermark: apply changes and fire stalls before it, in time order."""
        facts: list[Fact] = []
        pending = self.pending
        applied = 0
        while True:
            next_change = pending[applied][0] if applied < len(pending) else None
            if next_change is not None and next_change >= watermark_ms:
                next_change = None
            due, sku = self._next_due(watermark_ms)
            if due is not None and (next_change is None or due <= next_change):
                facts.append(self._fire(sku, due))
                continue
            if next_change is None:
                break
            self._apply(pending[applied])
            applied += 1
        if applied:
            del pending[:applied]
        return facts

    def _next_due(self, watermark_ms: int) -> tuple[int | None, str]:
        best, best_sku = None, ""
        for sku, line in self.cart.items():
            due = line[_DUE]
            if (
                due != FIRED
                and due < watermark_ms
                and (best is None or (due, sku) < (best, best_sku))
            ):
                best, best_sku = due, sku
        return best, best_sku

    def _apply(self, change: tuple[Any, ...]) -> None:
        ts, kind, event_id, sku, qty, price, category, dwell = change
        if kind == _MOVED:
            self.cart.pop(sku, None)
            return
        line = self.cart.get(sku)
        if line is None or line[_DUE] == FIRED:
            self.cart[sku] = [category, price, qty, ts, event_id, ts + dwell]
        else:  # more of an item still waiting: the same silence
            line[_QTY] += qty
            line[_PRICE] = price

    def _fire(self, sku: str, due: int) -> Fact:
        line = self.cart[sku]
        line[_DUE] = FIRED
        cart_value = round(sum(ln[_PRICE] * ln[_QTY] for ln in self.cart.values()), 2)
        fact = Fact(
            pattern="cart_stall",
            user_id=self.user_id,
            at_ms=due,
            subject=sku,
            trigger_event_id=line[_EID],
            fields={
                "pattern": "cart_stall",
                "sku": sku,
                "category": line[_CAT],
                "price": line[_PRICE],
                "qty": line[_QTY],
                "cart_value": cart_value,
                "dwell_ms": due - line[_START],
                "added_at_ms": line[_START],
                "prior_stalls": self.stalls,
                "segment": self.segment,
                "timezone": self.timezone,
            },
        )
        self.stalls += 1
        return fact

    # -- state --------------------------------------------------------------------

    def is_empty(self) -> bool:
        return not self.cart and not self.pending

    def snapshot(self) -> list[Any]:
        """A plain, compact, JSON-ready copy of the state."""
        return [
            SNAPSHOT_VERSION,
            {sku: list(line) for sku, line in self.cart.items()},
            [list(change) for change in self.pending],
            self.stalls,
            self.segment,
            self.timezone,
        ]

    @classmethod
    def from_snapshot(cls, user_id: str, snap: list[Any]) -> Journey:
        if not snap or snap[0] != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported journey snapshot version {snap[:1]!r}")
        journey = cls(user_id)
        _, cart, pending, journey.stalls, journey.segment, journey.timezone = snap
        journey.cart = {sku: list(line) for sku, line in cart.items()}
        journey.pending = [tuple(change) for change in pending]
        return journey
