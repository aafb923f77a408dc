"""Per-shopper journey state, stepped in event time, rebuilt from a snapshot.

Shaped like a stateful-operator logic object: :meth:`Journey.on_item` takes an
event, :meth:`Journey.on_notify` advances the journey to a watermark,
:meth:`Journey.notify_at` tells the deadline index when to come back, and
:meth:`Journey.snapshot` / :meth:`Journey.from_snapshot` are the only form the
state takes outside memory (the changelog-backed table stores the snapshot).

Event time, not arrival order: the four input topics interleave arbitrarily, so
an event that changes what a pattern sees is held in a small per-journey buffer,
ordered by time, and applied once the watermark passes it, interleaved with the
deadlines it races (a stall fires only if nothing moved the shopper on before
it). Every event the core accepts is at or after the watermark, so the outcome
is the same whatever the batching or the topic interleaving. Immediate patterns
(a cancel request, a cross-sell chance) are decided on arrival.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable
from typing import Any

from stream.domain import attribution
from stream.domain.attribution import W_ID, W_UNTIL
from stream.domain.budget import EPOCH_ORDINAL, budget_ordinal
from stream.domain.events import Event
from stream.domain.facts import Fact
from stream.domain.timeutil import DAY, parse_ts
from stream.domain.timing import Timing

#: A deadline that already fired: one firing per silence.
FIRED = -1

# Cart line: one sku's silence in the cart.
_CAT, _PRICE, _QTY, _START, _EID, _DUE = range(6)
# Open checkout.
C_START, C_EID, C_DUE, C_AMOUNT, C_ITEMS, C_CATS, C_SKUS = range(7)
# Order: created info, status, the unpaid-order and payment-stall deadlines.
(
    O_SEEN,  # first event time for this order (expiry)
    O_CREATED,  # order_created time or None (orphan payments are fine)
    O_EID,  # event that created it
    O_AMOUNT,
    O_DEADLINE,  # pay_deadline or None
    O_STATUS,
    O_UNPAID_DUE,  # None, a time, or FIRED
    O_PAY_START,  # cashier silence start
    O_PAY_EID,
    O_PAY_DUE,  # None, a time, or FIRED
    O_FAILS,
    O_REASON,
    O_METHOD,
    O_CATS,
    O_SKUS,
    O_CHECKOUT,  # the checkout it came from, if named
) = range(16)
OPEN, PAID, CANCELLED, CANCEL_REQUESTED = range(4)
STATUS_NAMES = ("open", "paid", "cancelled", "cancel_requested")

# Buffered change: (ts, order, event_id, index, type, data). At equal times,
# moving on (order 0) comes before arming a deadline (order 1).
_ORDER = {
    "cart_remove": 0,
    "checkout_submit": 0,
    "payment_success": 0,
    "order_paid": 0,
    "order_cancelled": 0,
    "order_cancel_requested": 0,
    "order_created": 0,
    "cart_add": 1,
    "checkout_start": 1,
    "cashier_enter": 1,
    "payment_failed": 1,
}

SNAPSHOT_VERSION = 6
MAX_VIEWS = 200
#: Later than any event time (a start for minimum searches).
_NEVER = 1 << 62


def event_key(event_id: str) -> int:
    """A stable 64-bit key of an event id, for duplicate detection."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # 63 bits: a JSON-safe signed integer


def _new_order(seen_ms: int, event_id: str) -> list[Any]:
    """An order entry (layout: the O_* indexes), open, with nothing known yet."""
    order: list[Any] = [seen_ms, None, event_id, None, None, OPEN, None, None, None, None, 0]
    order.extend((None, None, [], [], None))
    return order


def _skus(items: Any) -> tuple[str, ...]:
    return tuple(item["sku"] for item in items or ())


def _cats(items: Any) -> list[str]:
    cats: list[str] = []
    for item in items or ():
        cat = item.get("category")
        if cat and cat not in cats:
            cats.append(cat)
    return cats


def _drop_started_before(table: dict[str, list[Any]], idx: int, before_ms: int) -> None:
    """Remove the entries whose start (at ``idx``) is before ``before_ms``."""
    for entry in table.values():
        if entry[idx] < before_ms:
            for key in [k for k, v in table.items() if v[idx] < before_ms]:
                del table[key]
            return


class Journey:
    __slots__ = (
        "cart",
        "charges",
        "checkouts",
        "deferred",
        "interventions",
        "orders",
        "outbox",
        "outcomes",
        "parked",
        "pending",
        "prior",
        "seen",
        "seen_min",
        "segment",
        "sent",
        "timezone",
        "user_id",
        "views",
        "watches",
    )

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.cart: dict[str, list[Any]] = {}
        self.checkouts: dict[str, list[Any]] = {}
        self.orders: dict[str, list[Any]] = {}
        self.pending: list[tuple[Any, ...]] = []
        #: records checkpointed, not yet delivered: [topic code, record, delivery number]
        #: ("i" interventions, "o" outcomes; the number: PartitionCore.outbox_seq)
        self.outbox: list[list[Any]] = []
        self.seen: dict[int, int] = {}
        self.seen_min: int | None = None  # min(seen.values()), kept as events come and go
        self.prior = 0  # patterns detected for this shopper so far
        self.interventions = 0  # commands sent to this shopper so far
        self.views: list[int] = []  # product and cart views in the last day
        self.segment: str | None = None
        self.timezone: str | None = None
        #: interventions decided for this shopper: [at_ms, pattern, scope, offer active until]
        self.sent: list[list[Any]] = []
        #: commands held by quiet hours: [release_ms, command]
        self.deferred: list[list[Any]] = []
        #: budget charged by this shopper's commands: [bucket, unit, day, cost]
        self.charges: list[list[Any]] = []
        #: decisions waiting for their conversion (stream.domain.attribution)
        self.watches: list[list[Any]] = []
        #: facts waiting for a budget claim to settle (stream.domain.facts.fact_to_list)
        self.parked: list[list[Any]] = []
        #: attribution records produced since the engine last looked (not persisted)
        self.outcomes: list[dict[str, Any]] = []

    # -- taking events ------------------------------------------------------------

    def is_duplicate(self, ev: Event, key: int | None = None) -> bool:
        """Seen within the horizon? ``key``: the event's :func:`event_key`, if known."""
        return (event_key(ev.event_id) if key is None else key) in self.seen

    def on_item(self, ev: Event, timing: Timing, key: int | None = None) -> list[Fact]:
        """Take one event; return the facts it yields at once (cancel request, cross-sell).

        ``key``: the event's :func:`event_key`, if the caller computed it already.
        """
        self.seen[event_key(ev.event_id) if key is None else key] = ev.ts
        if self.seen_min is None or ev.ts < self.seen_min:
            self.seen_min = ev.ts
        body = ev.body
        if body.get("segment") is not None:
            self.segment = body["segment"]
        if body.get("timezone") is not None:
            self.timezone = body["timezone"]
        kind = ev.type
        data: tuple[Any, ...]
        facts: list[Fact] = []
        if kind == "cart_add":
            category = body["category"]
            data = (
                body["sku"],
                body.get("qty") or 1,
                float(body["price"]),
                category,
                timing.cart_dwell(category),
            )
        elif kind == "cart_remove":
            data = (body["sku"],)
        elif kind == "checkout_start":
            items = body["items"]
            cats = _cats(items)
            amount = body.get("amount")
            if amount is None:
                amount = sum(i.get("price", 0.0) * i.get("qty", 1) for i in items)
            data = (
                body["checkout_id"],
                _skus(items),
                float(amount),
                len(items),
                cats,
                timing.checkout_abandon_ms,
            )
            missing = timing.missing_companions(cats)
            if missing:
                facts.append(self._cross_sell(ev, cats, missing, float(amount)))
        elif kind == "checkout_submit":
            data = (body["checkout_id"], _skus(body.get("items")))
        elif kind == "order_created":
            data = (
                body["order_id"],
                body.get("checkout_id"),
                _skus(body["items"]),
                float(body["amount"]),
                parse_ts(body["pay_deadline"], "pay_deadline"),
                timing.unpaid_lead_ms,
                _cats(body["items"]),
            )
        elif kind == "cashier_enter":
            data = (
                body["order_id"],
                body.get("amount"),
                body.get("method"),
                timing.payment_stall_ms,
            )
        elif kind == "payment_failed":
            reason = body.get("reason")
            data = (
                body["order_id"],
                body.get("amount"),
                body.get("method"),
                timing.payment_stall(reason),
                reason,
            )
        elif kind in ("payment_success", "order_paid", "order_cancelled"):
            data = (body["order_id"], body.get("amount"))
        elif kind == "order_cancel_requested":
            data = (body["order_id"],)
            facts.append(self._cancel_request(ev))
        else:  # views: counted for the intent score
            views = self.views
            views.append(ev.ts)
            newest = max(views[-1], views[0])
            if views[0] < newest - DAY or len(views) > MAX_VIEWS:
                self.views = [t for t in views if t >= newest - DAY][-MAX_VIEWS:]
            return facts
        self._buffer((ev.ts, _ORDER[kind], ev.event_id, 0, kind, data))
        return facts

    def _buffer(self, change: tuple[Any, ...]) -> None:
        pending = self.pending
        if not pending or change >= pending[-1]:
            pending.append(change)
        else:
            bisect.insort(pending, change)

    # -- deadlines ------------------------------------------------------------------

    def notify_at(self, horizon_ms: int) -> int | None:
        """The watermark this journey waits for: just past its next change, deadline or expiry."""
        # One pass over the state, no intermediate lists (called after every change).
        low = _NEVER  # the earliest time of interest
        oldest = _NEVER  # when the oldest thing held began
        for line in self.cart.values():
            due = line[_DUE]
            if due != FIRED and due < low:
                low = due
            oldest = min(oldest, line[_START])
        for c in self.checkouts.values():
            due = c[C_DUE]
            if due != FIRED and due < low:
                low = due
            oldest = min(oldest, c[C_START])
        for order in self.orders.values():
            due = order[O_UNPAID_DUE]
            if due is not None and due != FIRED and due < low:
                low = due
            due = order[O_PAY_DUE]
            if due is not None and due != FIRED and due < low:
                low = due
            oldest = min(oldest, order[O_SEEN])
        if self.pending and self.pending[0][0] < low:
            low = self.pending[0][0]
        for w in self.watches:
            low = min(low, w[W_UNTIL])
        for d in self.deferred:
            low = min(low, d[0])
        if self.seen_min is not None and self.seen_min < oldest:
            oldest = self.seen_min
        if oldest != _NEVER and oldest + horizon_ms < low:
            low = oldest + horizon_ms
        # When _expire lets go of the rest: an intervention once past the horizon and no
        # longer an active offer; a day's charges once that day is over the horizon.
        for e in self.sent:
            until = max(e[0] + horizon_ms, e[3])
            low = min(low, until)
        if self.charges:
            last_day = max(c[2] for c in self.charges)
            until = (last_day + 2 - EPOCH_ORDINAL) * DAY + horizon_ms
            low = min(low, until)
        return low + 1 if low != _NEVER else None

    def on_notify(
        self,
        watermark_ms: int,
        horizon_ms: int,
        on_fact: Callable[[Fact], None],
        on_release: Callable[[dict[str, Any], bool], None],
    ) -> None:
        """Advance to the watermark: apply changes, fire deadlines and release deferred
        commands before it, in time order.

        Each fact goes to ``on_fact`` the moment it fires, so the decision about it
        (and the attribution watch it starts) precedes every later change. A command
        held by quiet hours goes to ``on_release`` at its release time, with whether
        its aim is still open then (its decision still watched: not converted, not
        cancelled, window not over); what happens after that time does not count,
        however far the watermark jumps.
        """
        pending = self.pending
        applied = 0
        while True:
            change_at = pending[applied][0] if applied < len(pending) else None
            if change_at is not None and change_at >= watermark_ms:
                change_at = None
            due = self._next_due(watermark_ms)
            if due is not None and (change_at is None or due[0] <= change_at):
                if due[1] == 4:
                    self._window_end(due[2])
                elif due[1] == 5:
                    _, command = self.deferred.pop(0)
                    decision_id = command["intervention_id"]
                    on_release(command, any(w[W_ID] == decision_id for w in self.watches))
                else:
                    on_fact(self._fire(*due))
                continue
            if change_at is None:
                break
            self._apply(pending[applied])
            applied += 1
        if applied:
            del pending[:applied]
        self._expire(watermark_ms - horizon_ms, watermark_ms)

    def _window_end(self, decision_id: str) -> None:
        for i, watch in enumerate(self.watches):
            if watch[0] == decision_id:
                del self.watches[i]
                self.outcomes.append(attribution.on_window_end(self.user_id, watch))
                return

    def _next_due(self, watermark_ms: int) -> tuple[int, int, str] | None:
        """(due, kind, key) of the earliest deadline, window end (4) or release (5) before
        the watermark."""
        best: tuple[int, int, str] | None = None
        for sku, line in self.cart.items():
            due = line[_DUE]
            if due != FIRED and due < watermark_ms and (best is None or (due, 0, sku) < best):
                best = (due, 0, sku)
        for cid, c in self.checkouts.items():
            due = c[C_DUE]
            if due != FIRED and due < watermark_ms and (best is None or (due, 1, cid) < best):
                best = (due, 1, cid)
        for oid, o in self.orders.items():
            for kind, idx in ((2, O_PAY_DUE), (3, O_UNPAID_DUE)):
                due = o[idx]
                live = due is not None and due != FIRED and due < watermark_ms
                if live and (best is None or (due, kind, oid) < best):
                    best = (due, kind, oid)
        for watch in self.watches:
            until = watch[W_UNTIL]
            if until < watermark_ms and (best is None or (until, 4, watch[0]) < best):
                best = (until, 4, watch[0])
        if self.deferred and self.deferred[0][0] < watermark_ms:  # in release order
            release, command = self.deferred[0]
            candidate = (release, 5, command["intervention_id"])
            if best is None or candidate < best:
                best = candidate
        return best

    def _expire(self, before_ms: int, watermark_ms: int) -> None:
        """Drop whatever started before the horizon: state stays bounded."""
        # Called at every notification: look before building anything.
        if self.cart:
            _drop_started_before(self.cart, _START, before_ms)
        if self.checkouts:
            _drop_started_before(self.checkouts, C_START, before_ms)
        if self.orders:
            _drop_started_before(self.orders, O_SEEN, before_ms)
        if self.views and self.views[0] < before_ms:
            self.views = [t for t in self.views if t >= before_ms]
        if self.seen_min is not None and self.seen_min < before_ms:
            self.seen = {k: ts for k, ts in self.seen.items() if ts >= before_ms}
            self.seen_min = min(self.seen.values()) if self.seen else None
        if self.sent and self.sent[0][0] < before_ms:
            self.sent = [e for e in self.sent if e[0] >= before_ms or e[3] >= watermark_ms]
        if self.charges:  # a day's charges matter while the day can still be spent
            oldest_day = budget_ordinal(before_ms) - 1
            if any(c[2] < oldest_day for c in self.charges):
                self.charges = [c for c in self.charges if c[2] >= oldest_day]

    # -- applying changes in event time -------------------------------------------------

    def _apply(self, change: tuple[Any, ...]) -> None:
        ts, _, event_id, _, kind, data = change
        cart, checkouts = self.cart, self.checkouts
        if kind == "cart_add":
            sku, qty, price, category, dwell = data
            line = cart.get(sku)
            if line is None or line[_DUE] == FIRED:
                cart[sku] = [category, price, qty, ts, event_id, ts + dwell]
            else:  # more of an item still waiting: the same silence
                line[_QTY] += qty
                line[_PRICE] = price
        elif kind == "cart_remove":
            cart.pop(data[0], None)
        elif kind == "checkout_start":
            cid, skus, amount, n_items, cats, wait = data
            for sku in skus:
                cart.pop(sku, None)
            if cid not in checkouts:
                checkouts[cid] = [ts, event_id, ts + wait, amount, n_items, cats, list(skus)]
        elif kind == "checkout_submit":
            cid, skus = data
            for sku in skus:
                cart.pop(sku, None)
            checkouts.pop(cid, None)
        elif kind == "order_created":
            self._order_created(ts, event_id, data)
        else:
            self._order_event(ts, event_id, kind, data)

    def _order(self, order_id: str, ts: int, event_id: str) -> list[Any]:
        order = self.orders.get(order_id)
        if order is None:
            order = self.orders[order_id] = _new_order(ts, event_id)
        return order

    def _order_created(self, ts: int, event_id: str, data: tuple[Any, ...]) -> None:
        oid, cid, skus, amount, deadline, lead, cats = data
        for sku in skus:
            self.cart.pop(sku, None)
        if cid is not None:
            self.checkouts.pop(cid, None)
        else:  # no checkout named: an order ends every checkout started before it
            for key in [k for k, c in self.checkouts.items() if c[C_START] <= ts]:
                del self.checkouts[key]
        order = self._order(oid, ts, event_id)
        order[O_CREATED], order[O_EID], order[O_AMOUNT] = ts, event_id, amount
        order[O_DEADLINE], order[O_CATS] = deadline, cats
        order[O_SKUS], order[O_CHECKOUT] = list(skus), cid
        if order[O_STATUS] == OPEN and order[O_UNPAID_DUE] is None:
            order[O_UNPAID_DUE] = max(ts, deadline - lead)

    def _order_event(self, ts: int, event_id: str, kind: str, data: tuple[Any, ...]) -> None:
        order = self._order(data[0], ts, event_id)
        if kind in ("cashier_enter", "payment_failed"):
            _, amount, method, wait = data[:4]
            if amount is not None and order[O_AMOUNT] is None:
                order[O_AMOUNT] = float(amount)
            if method is not None:
                order[O_METHOD] = method
            if kind == "payment_failed":
                order[O_FAILS] += 1
                order[O_REASON] = data[4]
            if order[O_STATUS] != OPEN:
                return
            due = order[O_PAY_DUE]
            if due is None or due == FIRED:  # a new silence at the cashier
                order[O_PAY_START], order[O_PAY_EID], order[O_PAY_DUE] = ts, event_id, ts + wait
            else:  # a failure can shorten the wait (T depends on the reason)
                order[O_PAY_DUE] = min(due, ts + wait)
        elif kind in ("payment_success", "order_paid"):
            first = order[O_STATUS] != PAID
            order[O_STATUS] = PAID
            order[O_PAY_DUE] = order[O_UNPAID_DUE] = None
            if data[1] is not None and order[O_AMOUNT] is None:
                order[O_AMOUNT] = float(data[1])
            if first and self.watches:
                self.outcomes.extend(
                    attribution.on_paid(
                        self.user_id,
                        self.watches,
                        ts,
                        data[0],
                        order[O_SKUS],
                        order[O_CATS],
                        order[O_CHECKOUT],
                        order[O_AMOUNT],
                    )
                )
        elif kind == "order_cancelled":
            order[O_STATUS] = CANCELLED
            order[O_PAY_DUE] = order[O_UNPAID_DUE] = None
            if self.watches:
                self.outcomes.extend(
                    attribution.on_cancelled(self.user_id, self.watches, ts, data[0])
                )
        elif kind == "order_cancel_requested" and order[O_STATUS] == OPEN:
            # The retention offer is decided on arrival; no reminders while the
            # shopper is asking to leave.
            order[O_STATUS] = CANCEL_REQUESTED
            order[O_PAY_DUE] = order[O_UNPAID_DUE] = None

    # -- facts ----------------------------------------------------------------------

    def _fire(self, due: int, kind: int, key: str) -> Fact:
        if kind == 0:
            fact = self._cart_stall(key, due)
        elif kind == 1:
            fact = self._checkout_abandon(key, due)
        elif kind == 2:
            fact = self._payment_stall(key, due)
        else:
            fact = self._unpaid_order(key, due)
        self.prior += 1
        return fact

    def _base(self, pattern: str, at_ms: int) -> dict[str, Any]:
        return {
            "pattern": pattern,
            "cart_value": self.cart_value(),
            "prior_stalls": self.prior,
            "prior_interventions": self.interventions,
            "views_24h": sum(1 for t in self.views if at_ms - DAY <= t <= at_ms),
            "segment": self.segment,
            "timezone": self.timezone,
        }

    def cart_value(self) -> float:
        return round(sum(ln[_PRICE] * ln[_QTY] for ln in self.cart.values()), 2)

    def _cart_stall(self, sku: str, due: int) -> Fact:
        line = self.cart[sku]
        line[_DUE] = FIRED
        fields = self._base("cart_stall", due)
        fields.update(
            sku=sku,
            category=line[_CAT],
            price=line[_PRICE],
            qty=line[_QTY],
            dwell_ms=due - line[_START],
            added_at_ms=line[_START],
        )
        return Fact("cart_stall", self.user_id, due, sku, line[_EID], fields)

    def _checkout_abandon(self, cid: str, due: int) -> Fact:
        c = self.checkouts[cid]
        c[C_DUE] = FIRED
        fields = self._base("checkout_abandon", due)
        fields.update(
            checkout_id=cid,
            amount=c[C_AMOUNT],
            items=c[C_ITEMS],
            category=c[C_CATS][0] if c[C_CATS] else None,
            categories=list(c[C_CATS]),
            skus=list(c[C_SKUS]),
            dwell_ms=due - c[C_START],
            started_at_ms=c[C_START],
        )
        return Fact("checkout_abandon", self.user_id, due, cid, c[C_EID], fields)

    def _order_fields(self, pattern: str, oid: str, order: list[Any], at_ms: int) -> dict[str, Any]:
        fields = self._base(pattern, at_ms)
        cats = order[O_CATS]
        fields.update(
            order_id=oid,
            amount=order[O_AMOUNT],
            method=order[O_METHOD],
            payment_failures=order[O_FAILS],
            failure_reason=order[O_REASON],
            category=cats[0] if cats else None,
            categories=list(cats),
            status=STATUS_NAMES[order[O_STATUS]],
        )
        return fields

    def _payment_stall(self, oid: str, due: int) -> Fact:
        order = self.orders[oid]
        order[O_PAY_DUE] = FIRED
        fields = self._order_fields("payment_stall", oid, order, due)
        fields.update(dwell_ms=due - order[O_PAY_START], at_cashier_since_ms=order[O_PAY_START])
        return Fact("payment_stall", self.user_id, due, oid, order[O_PAY_EID], fields)

    def _unpaid_order(self, oid: str, due: int) -> Fact:
        order = self.orders[oid]
        order[O_UNPAID_DUE] = FIRED
        fields = self._order_fields("unpaid_order", oid, order, due)
        deadline = order[O_DEADLINE]
        fields.update(
            pay_deadline_ms=deadline,
            ms_to_deadline=deadline - due,
            dwell_ms=due - order[O_CREATED],
        )
        return Fact("unpaid_order", self.user_id, due, oid, order[O_EID], fields)

    def _cancel_request(self, ev: Event) -> Fact:
        oid = ev.body["order_id"]
        order = self.orders.get(oid)
        if order is None:  # created moments ago: maybe still in the buffer
            order = _new_order(ev.ts, ev.event_id)
            for change in self.pending:
                if change[4] == "order_created" and change[5][0] == oid:
                    _, _, _, amount, deadline, _, cats = change[5]
                    order[O_CREATED], order[O_AMOUNT], order[O_DEADLINE] = (
                        change[0],
                        amount,
                        deadline,
                    )
                    order[O_CATS] = cats
        self.prior += 1
        fields = self._order_fields("cancel_request", oid, order, ev.ts)
        fields["prior_stalls"] = self.prior - 1
        fields.update(
            reason=ev.body.get("reason"),
            order_age_ms=ev.ts - order[O_CREATED] if order[O_CREATED] is not None else None,
        )
        return Fact("cancel_request", self.user_id, ev.ts, oid, ev.event_id, fields)

    def _cross_sell(self, ev: Event, cats: list[str], missing: list[str], amount: float) -> Fact:
        fields = self._base("cross_sell", ev.ts)
        self.prior += 1
        fields.update(
            checkout_id=ev.body["checkout_id"],
            category=cats[0],
            categories=cats,
            missing_categories=missing,
            amount=amount,
        )
        return Fact("cross_sell", self.user_id, ev.ts, ev.body["checkout_id"], ev.event_id, fields)

    # -- state --------------------------------------------------------------------

    def is_empty(self) -> bool:
        return not (
            self.cart
            or self.checkouts
            or self.orders
            or self.pending
            or self.seen
            or self.outbox
            or self.sent
            or self.deferred
            or self.charges
            or self.watches
            or self.parked
        )

    def snapshot(self) -> list[Any]:
        """A plain, compact, JSON-ready copy of the state."""
        return [
            SNAPSHOT_VERSION,
            self.cart,
            self.checkouts,
            self.orders,
            self.pending,
            list(self.seen.items()),
            self.prior,
            self.interventions,
            self.views,
            self.segment,
            self.timezone,
            self.outbox,
            self.sent,
            self.deferred,
            self.charges,
            self.watches,
            self.parked,
        ]

    @classmethod
    def from_snapshot(cls, user_id: str, snap: list[Any]) -> Journey:
        if snap and snap[0] == 4:  # before guardrails and attribution: same, and less
            snap = [SNAPSHOT_VERSION, *snap[1:11], [["i", c] for c in snap[11]], [], [], [], [], []]
            for order in snap[3].values():
                order.extend([[], None][len(order) - 14 :])
            for checkout in snap[2].values():
                checkout.extend([[]][len(checkout) - 6 :])
        if snap and snap[0] == 5:  # the same, outbox entries without a delivery number
            snap = [SNAPSHOT_VERSION, *snap[1:]]
        if not snap or snap[0] != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported journey snapshot version {snap[:1]!r}")
        # Every attribute is set below: skip __init__'s empty containers (this runs each
        # time a journey at rest is read again).
        journey = cls.__new__(cls)
        journey.user_id = user_id
        journey.outcomes = []
        (
            _,
            journey.cart,
            journey.checkouts,
            journey.orders,
            pending,
            seen,
            journey.prior,
            journey.interventions,
            journey.views,
            journey.segment,
            journey.timezone,
            journey.outbox,
            journey.sent,
            journey.deferred,
            journey.charges,
            journey.watches,
            journey.parked,
        ) = snap
        journey.pending = [(c[0], c[1], c[2], c[3], c[4], tuple(c[5])) for c in pending]
        journey.seen = dict(seen)
        if seen and type(seen[0][0]) is not int:  # keys written as text
            journey.seen = {int(k): ts for k, ts in seen}
        journey.seen_min = min(journey.seen.values()) if journey.seen else None
        return journey
