"""Generated shopper traffic in event time, closed loop (seeded, no clock reads).

Each shopper views an item and adds it to the cart, then removes it, checks out
soon, or leaves it in the cart. Checkouts may be dropped; orders may be paid at
once, after a failed payment, or not at all; some shoppers ask to cancel; a
checkout lacking a companion category is a cross-sell chance. A small share of
messages is malformed on purpose so the dead-letter path shows up too.

Shoppers respond to interventions. Wherever a pattern can fire, what the shopper
finally does is not scheduled up front: a *decision point* is, a reaction delay
(``REACTION_MS``) after the pattern's deadline. There the shopper converts (buys
the stalled item, submits the dropped checkout, pays the order, keeps the order
instead of cancelling it, buys the missing companion) with probability
``BASE_RATES[pattern]``, plus ``lift`` if an intervention command for that
journey arrived before (:meth:`ShopperSim.on_command`). Shoppers held out as
control get no command and convert at the base rate, so the report's uplift
(treatment rate - control rate) estimates ``lift``. A converting shopper finishes
quickly and cleanly, so the conversion is credited to that decision and to no
other.

Randomness is per shopper (seeded by the seed and the user id): a shopper's visit
depends only on the seed and on the commands it received before its decision
points, not on how calls to the simulator interleave.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stream.domain.events import TYPE_KIND
from stream.domain.timeutil import MINUTE, SECOND, format_ts, parse_ts
from stream.domain.timing import Timing


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    price_range: tuple[float, float]
    #: odds of: remove it, check out soon, leave it in the cart (a cart stall)
    odds: tuple[float, float, float]
    #: a category often bought along (makes cross-sell chances), or ""
    companion: str = ""


CATEGORIES = (
    Category("fresh_food", (2, 30), (0.10, 0.45, 0.45)),
    Category("mother_baby.diapers", (8, 90), (0.10, 0.40, 0.50), "mother_baby.wipes"),
    Category("home_cleaning.detergent", (3, 40), (0.10, 0.40, 0.50), "home_cleaning.softener"),
    Category("fashion.shoes", (15, 200), (0.20, 0.30, 0.50), "fashion.socks"),
    Category("electronics.smartphone", (150, 1500), (0.15, 0.30, 0.55), "electronics.accessories"),
    Category("books", (5, 60), (0.10, 0.35, 0.55)),
)

FAILURE_REASONS = ("insufficient_funds", "card_declined", "bank_timeout")

#: Chance that a shopper converts at a decision point without an intervention.
BASE_RATES: Mapping[str, float] = {
    "cart_stall": 0.25,  # checks out and pays the stalled item
    "checkout_abandon": 0.30,  # submits the dropped checkout and pays
    "payment_stall": 0.40,  # pays the order
    "unpaid_order": 0.30,  # pays the order before its deadline
    "cancel_request": 0.45,  # withdraws the cancellation (and pays)
    "cross_sell": 0.15,  # buys a missing companion in a follow-up order
}
#: What an intervention command adds to the chance of converting.
DEFAULT_LIFT = 0.25
#: A decision point comes this long after the pattern's deadline (event time): long
#: enough for the worker's lateness and batching to deliver the command first.
REACTION_MS = (10 * MINUTE, 20 * MINUTE)
#: Orders must be paid within this; the unpaid-order reminder fires before it.
PAY_WINDOW_MS = 45 * MINUTE

Emitted = tuple[str, str, bytes | dict[str, Any]]  # (topic kind, user key, event)
Key = tuple[str, str, str]  # (user id, pattern, subject)
POINT = "point"  # heap entries that are decision points, not events
#: Patterns the worker decides as their event arrives (no deadline, no watermark).
IMMEDIATE = frozenset({"cross_sell", "cancel_request"})

#: Events after which nothing fires on an order any more.
_ORDER_SETTLED = frozenset(
    {"payment_success", "order_paid", "order_cancelled", "order_cancel_requested"}
)
#: Where a command names its subject (the same one the pattern's fact is about).
_SUBJECT_FIELD = {
    "cart_stall": "sku",
    "checkout_abandon": "checkout_id",
    "cross_sell": "checkout_id",
    "payment_stall": "order_id",
    "unpaid_order": "order_id",
    "cancel_request": "order_id",
}


def check_lift(lift: float) -> None:
    """Refuse a lift that would take a conversion chance outside [0, 1] (ValueError)."""
    low, high = -min(BASE_RATES.values()), 1 - max(BASE_RATES.values())
    if not low <= lift <= high:
        raise ValueError(
            f"lift must be between {low:g} and {high:g} (the base conversion rates run "
            f"from {min(BASE_RATES.values()):g} to {max(BASE_RATES.values()):g}); got {lift:g}"
        )


def command_key(command: Mapping[str, Any]) -> Key | None:
    """(user, pattern, subject) of an intervention command; None if it names none."""
    pattern = command.get("pattern")
    name = _SUBJECT_FIELD.get(pattern) if isinstance(pattern, str) else None
    fact = command.get("fact")
    if name is None or not isinstance(fact, Mapping):
        return None
    subject, user = fact.get(name), command.get("user_id")
    if not isinstance(subject, str) or not isinstance(user, str):
        return None
    return (user, str(pattern), subject)


@dataclass(slots=True)
class _Point:
    """Where a shopper decides, once the pattern had its chance to fire."""

    pattern: str
    subject: str
    trigger_ms: int  # when what arms the pattern was sent
    due_ms: int  # when the pattern fires (its deadline; immediate patterns: trigger_ms)
    data: dict[str, Any]


@dataclass(slots=True)
class _Shopper:
    user: str
    rng: random.Random | None
    ids: int = 0  # events and checkouts numbered per shopper
    checkouts: int = 0
    pending: int = 0  # heap entries not popped yet
    #: what the worker can still fire on, as sent so far, with when it was last armed
    cart: dict[str, int] = field(default_factory=dict)
    open_checkouts: dict[str, int] = field(default_factory=dict)
    open_orders: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Conversions:
    """Decision points of one pattern, with or without a command, and how many converted."""

    points: int = 0
    converted: int = 0

    @property
    def rate(self) -> float | None:
        return self.converted / self.points if self.points else None


class ShopperSim:
    """A heap of future events and decision points; spawn shoppers, then pop what is due."""

    def __init__(
        self,
        seed: int,
        dwell_ms: Mapping[str, int],
        malformed_share: float = 0.01,
        prefix: str = "u",
        *,
        lift: float = DEFAULT_LIFT,
        timing: Timing | None = None,
    ):
        check_lift(lift)
        self.seed = seed
        self.lift = lift
        self.malformed_share = malformed_share
        self.prefix = prefix
        #: pattern timing and companions as the worker sees them (the rule files)
        self.timing = timing or Timing(
            cart_dwell_ms=dict(dwell_ms),
            companions={c.name: (c.companion,) for c in CATEGORIES if c.companion},
        )
        self._heap: list[tuple[int, int, str, str, Any]] = []
        self._seq = 0
        self._shoppers: dict[str, _Shopper] = {}
        self._commands: set[Key] = set()
        self._decided: set[Key] = set()
        self._closing = False
        #: heap entries a decision made (what a shopper does at a decision point)
        self._settling: set[int] = set()
        self._deciding = False
        self.shoppers = 0
        #: decision points by (pattern, had a command), and how many converted
        self.conversions: dict[tuple[str, bool], Conversions] = {}
        self.commands = 0  # commands received
        self.late_commands = 0  # received after the shopper had decided
        #: event time from a command's deadline (fired_at) to its arrival, per command
        self.command_delays_ms: list[int] = []

    # -- scheduling ---------------------------------------------------------------

    def _push(self, s: _Shopper, ts: int, kind: str, payload: Any) -> None:
        self._seq += 1
        s.pending += 1
        if self._deciding:
            self._settling.add(self._seq)
        heapq.heappush(self._heap, (ts, self._seq, s.user, kind, payload))

    def _event(self, s: _Shopper, type_: str, ts: int, **fields: Any) -> None:
        s.ids += 1
        body = {"event_id": f"{s.user}e{s.ids}", "type": type_, "user_id": s.user}
        body["ts"] = format_ts(ts)
        body.update(fields)
        self._push(s, ts, TYPE_KIND[type_], body)

    def _point(
        self,
        s: _Shopper,
        pattern: str,
        subject: str,
        trigger_ms: int,
        due_ms: int,
        latest_ms: int | None = None,
        **data: Any,
    ) -> None:
        """A decision point a reaction delay after ``due_ms`` (at most ``latest_ms``)."""
        if self._closing:  # traffic is stopping: no new chances
            return
        assert s.rng is not None
        at = due_ms + int(s.rng.uniform(*REACTION_MS))
        if latest_ms is not None:
            at = max(due_ms + SECOND, min(at, latest_ms))
        self._push(s, at, POINT, _Point(pattern, subject, trigger_ms, due_ms, data))

    def spawn(self, at_ms: int) -> str:
        """Start one new shopper's visit at ``at_ms``; return the user id."""
        self.shoppers += 1
        user = f"{self.prefix}{self.shoppers:06d}"
        rng = random.Random(f"{self.seed}/{user}")  # noqa: S311 - traffic, not secrets
        s = self._shoppers[user] = _Shopper(user, rng)
        cat = rng.choice(CATEGORIES)
        sku = f"{cat.name.split('.')[-1][:4]}-{rng.randrange(1, 400):04d}"
        price = round(rng.uniform(*cat.price_range), 2)
        item = {"sku": sku, "category": cat.name, "price": price, "qty": 1}
        t = at_ms
        self._event(s, "detail_view", t, sku=sku, category=cat.name, price=price)
        t += int(rng.expovariate(1 / 40) * SECOND) + SECOND
        segment = rng.choice(("new", "regular", "vip"))
        self._event(s, "cart_add", t, **item, segment=segment)
        if rng.random() < self.malformed_share:
            self._malformed(s, t)
        dwell = self.timing.cart_dwell(cat.name)
        choice = rng.choices(range(3), weights=cat.odds)[0]
        if choice == 0:  # removes it before the dwell
            self._event(s, "cart_remove", t + int(rng.uniform(0.1, 0.8) * dwell), sku=sku)
        elif choice == 1:  # checks out before the dwell: no stall
            items = [item]
            if cat.companion and rng.random() < 0.3:  # bought along: no cross-sell chance
                extra = {"sku": f"{sku}-x", "category": cat.companion, "price": 4.0, "qty": 1}
                self._event(s, "cart_add", t + 2 * SECOND, **extra)
                items.append(extra)
            self._checkout(s, t + int(rng.uniform(0.05, 0.8) * dwell) + 3 * SECOND, items)
        else:  # leaves it in the cart: decides after the stall
            self._point(s, "cart_stall", sku, t, t + dwell, item=item)
        return user

    def _checkout(
        self, s: _Shopper, t: int, items: list[dict[str, Any]], *, clean: bool = False
    ) -> None:
        """Start a checkout; ``clean``: submitted and paid at once (a conversion)."""
        rng = s.rng
        assert rng is not None
        s.checkouts += 1
        tag = "" if s.checkouts == 1 else f"-{s.checkouts}"
        cid, order = f"c-{s.user}{tag}", f"o-{s.user}{tag}"
        cats = list(dict.fromkeys(i["category"] for i in items))
        missing = self.timing.missing_companions(cats)
        if missing and self._closing:  # no new chances while traffic stops: bought along
            for n, companion in enumerate(missing):
                items = [*items, _companion_item(items[0]["sku"], companion, n, rng)]
            missing = []
        amount = round(sum(i["price"] * i["qty"] for i in items), 2)
        self._event(s, "checkout_start", t, checkout_id=cid, items=items, amount=amount)
        if missing:  # a cross-sell chance, decided at once by the worker
            self._point(s, "cross_sell", cid, t, t, sku=items[0]["sku"], missing=missing[0])
        if not clean and rng.random() < 0.15:  # drops the checkout
            due = t + self.timing.checkout_abandon_ms
            self._point(s, "checkout_abandon", cid, t, due, order=order, items=items)
            return
        t += int(rng.uniform(20, 60 if clean else 120) * SECOND)
        self._order(s, t, cid, order, items, clean=clean)

    def _order(
        self,
        s: _Shopper,
        t: int,
        cid: str,
        order: str,
        items: list[dict[str, Any]],
        *,
        clean: bool,
    ) -> None:
        rng = s.rng
        assert rng is not None
        amount = round(sum(i["price"] * i["qty"] for i in items), 2)
        self._event(s, "checkout_submit", t, checkout_id=cid, order_id=order)
        t += SECOND
        deadline = t + PAY_WINDOW_MS
        self._event(
            s,
            "order_created",
            t,
            order_id=order,
            checkout_id=cid,
            items=items,
            amount=amount,
            pay_deadline=format_ts(deadline),
        )
        if clean:
            self._pay(s, order, amount, t + int(rng.uniform(10, 60) * SECOND))
            return
        unpaid = {"created": t, "deadline": deadline, "amount": amount}
        unpaid_due = max(t, deadline - self.timing.unpaid_lead_ms)
        fate = rng.random()
        if fate < 0.08:  # asks to cancel: a retention offer is decided at once
            t += int(rng.uniform(1, 10) * MINUTE)
            self._event(s, "order_cancel_requested", t, order_id=order, reason="changed_mind")
            self._point(s, "cancel_request", order, t, t, amount=amount)
            return
        t += int(rng.uniform(10, 90) * SECOND)
        self._event(s, "cashier_enter", t, order_id=order, amount=amount, method="card")
        # A payment stall decides before the unpaid-order reminder fires on the same
        # order: otherwise that later decision would take the credit for the payment.
        latest = unpaid_due - 2 * MINUTE
        if fate < 0.25:  # a failed payment first
            t += int(rng.uniform(10, 60) * SECOND)
            reason = rng.choice(FAILURE_REASONS)
            self._event(
                s,
                "payment_failed",
                t,
                order_id=order,
                amount=amount,
                method="card",
                reason=reason,
            )
            wait = self.timing.payment_stall(reason)
            if rng.random() < 0.5:  # tries again at once and pays: no stall
                self._pay(s, order, amount, t + int(rng.uniform(0.2, 0.8) * wait), cashier=False)
            else:
                self._point(s, "payment_stall", order, t, t + wait, latest, **unpaid)
        elif fate < 0.32:  # leaves the cashier without paying
            due = t + self.timing.payment_stall(None)
            self._point(s, "payment_stall", order, t, due, latest, **unpaid)
        else:
            self._pay(s, order, amount, t + 5 * SECOND, cashier=False)

    def _pay(self, s: _Shopper, order: str, amount: float, t: int, *, cashier: bool = True) -> None:
        if cashier:
            self._event(s, "cashier_enter", t, order_id=order, amount=amount, method="card")
        kw = {"order_id": order, "amount": amount, "method": "card"}
        self._event(s, "payment_success", t + 5 * SECOND, **kw)
        self._event(s, "order_paid", t + 6 * SECOND, order_id=order, amount=amount)

    def _malformed(self, s: _Shopper, t: int) -> None:
        assert s.rng is not None
        bad: list[bytes] = [
            b'{"type": "cart_add", "user_id": "' + s.user.encode() + b'", "ts": ',  # truncated
            b"not json at all",
            b'{"event_id": "x", "type": "cart_teleport", "user_id": "u", "ts": 1764000000000}',
            b'{"event_id": "y", "type": "cart_add", "user_id": "u", "ts": 1764000000000, '
            b'"sku": "s", "category": "books", "price": "free"}',
        ]
        self._push(s, t, "cart", s.rng.choice(bad))

    # -- the loop: commands in, decisions out ---------------------------------------

    def on_command(self, command: Mapping[str, Any], at_ms: int | None = None) -> bool:
        """An intervention command reached its shopper (at event time ``at_ms``, if known).

        The decision point of that journey (user, pattern, subject) then converts at
        base + lift. Returns False if the command came too late (the shopper had
        decided) or names no journey."""
        key = command_key(command)
        if key is None:
            return False
        self.commands += 1
        fired_at = command.get("fired_at")
        if at_ms is not None and isinstance(fired_at, str):
            self.command_delays_ms.append(at_ms - parse_ts(fired_at, "fired_at"))
        if key in self._decided:
            self.late_commands += 1
            return False
        self._commands.add(key)
        return True

    def _decide(self, s: _Shopper, p: _Point, at: int) -> None:
        assert s.rng is not None
        key = (s.user, p.pattern, p.subject)
        commanded = key in self._commands
        self._commands.discard(key)
        self._decided.add(key)
        rate = BASE_RATES[p.pattern] + (self.lift if commanded else 0.0)
        converted = s.rng.random() < rate
        stats = self.conversions.setdefault((p.pattern, commanded), Conversions())
        stats.points += 1
        stats.converted += converted
        self._deciding = True
        try:
            self._act(s, p, converted, at)
        finally:
            self._deciding = False

    def _act(self, s: _Shopper, p: _Point, converted: bool, at: int) -> None:
        assert s.rng is not None
        d = p.data
        if p.pattern == "cart_stall":
            if converted:  # comes back, checks out and pays
                self._checkout(s, at, [d["item"]], clean=True)
            elif s.rng.random() < 0.5:  # gives up on it
                self._event(s, "cart_remove", at, sku=d["item"]["sku"])
        elif p.pattern == "checkout_abandon":
            if converted:  # comes back and submits that checkout
                self._order(s, at, p.subject, d["order"], d["items"], clean=True)
        elif p.pattern == "cross_sell":
            if converted:  # buys the companion in a follow-up order
                item = _companion_item(d["sku"], d["missing"], 0, s.rng)
                self._event(s, "cart_add", at, **item)
                self._checkout(s, at + int(s.rng.uniform(20, 90) * SECOND), [item], clean=True)
        elif p.pattern == "cancel_request":
            if converted:  # keeps the order and pays it
                self._pay(s, p.subject, d["amount"], at, cashier=False)
            else:
                self._event(s, "order_cancelled", at, order_id=p.subject)
        elif converted:  # payment_stall, unpaid_order: pays
            self._pay(s, p.subject, d["amount"], at)
        elif p.pattern == "payment_stall":  # still unpaid: the reminder before the deadline
            due = max(d["created"], d["deadline"] - self.timing.unpaid_lead_ms)
            latest = d["deadline"] - MINUTE
            self._point(s, "unpaid_order", p.subject, d["created"], due, latest, **d)
        else:  # unpaid_order, not paid: the shop cancels it at the deadline
            self._event(s, "order_cancelled", max(at, d["deadline"]), order_id=p.subject)

    def _track(self, s: _Shopper, ts: int, body: dict[str, Any]) -> None:
        """Keep what the worker can still fire on, as the event is sent."""
        type_ = body["type"]
        if type_ == "cart_add":
            s.cart.setdefault(body["sku"], ts)
        elif type_ == "cart_remove":
            s.cart.pop(body["sku"], None)
        elif type_ == "checkout_start":
            for item in body["items"]:
                s.cart.pop(item["sku"], None)
            s.open_checkouts[body["checkout_id"]] = ts
        elif type_ == "checkout_submit":
            s.open_checkouts.pop(body["checkout_id"], None)
        elif type_ == "order_created":
            for item in body["items"]:
                s.cart.pop(item["sku"], None)
            s.open_checkouts.pop(body["checkout_id"], None)
            s.open_orders[body["order_id"]] = ts
        elif type_ in _ORDER_SETTLED:
            s.open_orders.pop(body["order_id"], None)
        elif type_ in ("cashier_enter", "payment_failed") and body["order_id"] in s.open_orders:
            s.open_orders[body["order_id"]] = ts  # a new payment wait starts

    def due(self, until_ms: int) -> list[Emitted]:
        """Pop every event with event time <= until_ms: (kind, user key, event).

        Decision points due meanwhile are decided on the way (their events follow)."""
        return [emitted for _, emitted in self._pop(until_ms)]

    def _pop(self, until_ms: int) -> list[tuple[int, Emitted]]:
        out: list[tuple[int, Emitted]] = []
        heap = self._heap
        while heap and heap[0][0] <= until_ms:
            ts, seq, user, kind, payload = heapq.heappop(heap)
            self._settling.discard(seq)
            s = self._shoppers[user]
            s.pending -= 1
            if kind == POINT:
                self._decide(s, payload, ts)
            elif isinstance(payload, bytes):
                out.append((ts, (kind, "malformed", payload)))
            else:
                self._track(s, ts, payload)
                out.append((ts, (kind, user, payload)))
            if not s.pending:
                self._retire(s)
        return out

    def _retire(self, s: _Shopper) -> None:
        """A visit with nothing scheduled: keep only what the worker may still fire on."""
        s.rng = None
        if not (s.cart or s.open_checkouts or s.open_orders):
            del self._shoppers[s.user]

    @property
    def scheduled(self) -> int:
        """Events and decision points not popped yet."""
        return len(self._heap)

    def drain(self) -> list[Emitted]:
        """Pop every scheduled event, in event-time order (decision points without commands
        received meanwhile convert at the base rate)."""
        return self.due(2**62)

    def close(self, now_ms: int, fired_before_ms: int) -> list[Emitted]:
        """Traffic stops: settle every journey so that nothing fires after it.

        Events up to ``now_ms`` (the last event time sent) come out as usual; later
        ones are dropped. The worker's watermark is at ``fired_before_ms``: patterns
        due before it have fired, and their decision points are decided now, with the
        commands received so far (wait for them before calling this). Then whatever
        could still fire is ended (items removed, checkouts submitted, orders
        cancelled) before its deadline. Returns the events in event-time order, the
        closing ones at ``fired_before_ms`` or later (not late for the worker).
        """
        out = self.due(now_ms)
        pending, self._heap = sorted(self._heap), []
        self._closing = True
        points: list[tuple[_Shopper, _Point]] = []
        for ts, seq, user, kind, payload in pending:
            s = self._shoppers[user]
            settling = seq in self._settling
            if kind != POINT:
                if settling:  # finishing what a decision started (a purchase): kept
                    heapq.heappush(self._heap, (ts, seq, user, kind, payload))
                else:  # the rest of the visit: dropped
                    s.pending -= 1
                continue
            s.pending -= 1
            fires = payload.pattern in IMMEDIATE or payload.due_ms < fired_before_ms
            sent = payload.trigger_ms <= now_ms or settling  # what arms it is (or will be) sent
            if fires and sent:  # decide now, with the commands received so far
                points.append((s, payload))
        self._settling.clear()
        for s, p in points:
            self._decide(s, p, max(fired_before_ms, p.due_ms))
        closing = self._pop(2**62)
        for s in list(self._shoppers.values()):
            # Just after what armed it (at an equal time the worker would apply it first),
            # and before its deadline, which has not passed yet.
            for sku, ts in sorted(s.cart.items()):
                self._event(s, "cart_remove", max(fired_before_ms, ts + 1), sku=sku)
            for cid, ts in sorted(s.open_checkouts.items()):
                at = max(fired_before_ms, ts + 1)
                self._event(s, "checkout_submit", at, checkout_id=cid)
            for order, ts in sorted(s.open_orders.items()):
                self._event(s, "order_cancelled", max(fired_before_ms, ts + 1), order_id=order)
        closing += self._pop(2**62)
        closing.sort(key=lambda entry: entry[0])  # stable: each shopper's order is kept
        self._shoppers.clear()
        return out + [emitted for _, emitted in closing]

    def truth(self) -> dict[str, dict[bool, Conversions]]:
        """Decision points per pattern, with (True) and without (False) a command."""
        out: dict[str, dict[bool, Conversions]] = {}
        for (pattern, commanded), stats in sorted(self.conversions.items()):
            out.setdefault(pattern, {})[commanded] = stats
        return out


def _companion_item(sku: str, category: str, n: int, rng: random.Random) -> dict[str, Any]:
    tag = category.rpartition(".")[2][:4]
    price = round(rng.uniform(3, 25), 2)
    return {"sku": f"{sku}-{tag}{n or ''}", "category": category, "price": price, "qty": 1}
