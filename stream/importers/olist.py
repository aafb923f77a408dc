"""Olist "Brazilian E-Commerce Public Dataset" to goldenflow events.

The orders table drives the import (it streams); the payments, order items, products,
category translation and, when given, customers tables are looked up by key (the full
dataset has about 100k orders, so they fit in memory). Each order becomes
order_created and cashier_enter at its purchase time, payment_success and order_paid
at its approval time, and order_cancelled when its status is ``canceled`` or
``unavailable``. Times are Sao Paulo local time. docs/importers.md has the mapping and
every inference (payment windows, cancellation times).
"""

from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from stream.domain.timeutil import DAY, epoch_ms, format_ts
from stream.importers.common import (
    Event,
    ImportFailed,
    Stats,
    column_index,
    event,
    money,
    open_text,
    row_id,
    source_files,
)

DATASET: Final = "olist"
TIMEZONE: Final = "America/Sao_Paulo"
_LOCAL = ZoneInfo(TIMEZONE)
#: Time a shopper has to pay after placing the order, by payment method. A boleto
#: (bank slip) is paid at a bank and usually falls due after a few days; the other
#: methods are paid at the checkout, so a day is generous.
PAY_WINDOW_MS: Final = {"boleto": 3 * DAY}
DEFAULT_PAY_WINDOW_MS: Final = DAY
#: Statuses that mean the order was cancelled (the reason on order_cancelled).
CANCELLED: Final = frozenset({"canceled", "unavailable"})
#: Statuses that mean the payment went through even when order_approved_at is empty.
PAID_STATUSES: Final = frozenset({"approved", "processing", "invoiced", "shipped", "delivered"})

ORDERS: Final = (
    "order_id",
    "customer_id",
    "order_status",
    "order_purchase_timestamp",
    "order_approved_at",
    "order_delivered_carrier_date",
    "order_delivered_customer_date",
)
PAYMENTS: Final = ("order_id", "payment_sequential", "payment_type", "payment_value")
ITEMS: Final = ("order_id", "order_item_id", "product_id", "price", "freight_value")
PRODUCTS: Final = ("product_id", "product_category_name")
TRANSLATION: Final = ("product_category_name", "product_category_name_english")
CUSTOMERS: Final = ("customer_id", "customer_unique_id")

#: Each table is known by a column only it has.
_TABLES: Final = (
    ("orders", "order_status"),
    ("payments", "payment_type"),
    ("items", "order_item_id"),
    ("translation", "product_category_name_english"),
    ("products", "product_category_name"),
    ("customers", "customer_unique_id"),
)


class _Lookups:
    def __init__(self) -> None:
        self.payments: dict[str, list[tuple[str, float]]] = defaultdict(list)
        self.items: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
        self.category_of: dict[str, str] = {}
        self.english: dict[str, str] = {}
        self.customer: dict[str, str] = {}

    def category(self, product_id: str) -> str | None:
        name = self.category_of.get(product_id)
        return self.english.get(name, name) if name else None


def read(sources: Iterable[Path], stats: Stats) -> Iterator[list[Event]]:
    """Read the lookup tables, then yield the events of each order row."""
    tables: dict[str, list[Path]] = defaultdict(list)
    for path in source_files(sources):
        table = _table_of(path)
        if table is None:
            stats.notes.append(f"ignored {path.name}: not a table this importer reads")
            continue
        tables[table].append(path)
        stats.files += 1
    if not tables["orders"]:
        raise ImportFailed(
            "no orders table (olist_orders_dataset.csv) among the sources; give the orders, "
            "payments and order items files (products, category translation and customers "
            "are optional)"
        )
    look = _Lookups()
    read_rows: Counter[str] = Counter()
    for table in ("payments", "items", "products", "translation", "customers"):
        for path in tables[table]:
            read_rows[table] += _load(table, path, look, stats)
    seen: set[str] = set()
    for path in tables["orders"]:
        for row in _rows(path, ORDERS, stats):
            read_rows["orders"] += 1
            group = _order(row, look, seen, stats)
            if group:
                yield group
    for table, index in (("payments", look.payments), ("items", look.items)):
        for order_id in sorted(set(index) - seen):
            for _ in index[order_id]:
                stats.skip(f"{table}: order not in the orders table")
    stats.notes.append(
        "rows read: " + ", ".join(f"{t} {n:,}" for t, n in sorted(read_rows.items()))
    )


def _table_of(path: Path) -> str | None:
    with open_text(path) as f:
        header = {h.strip() for h in next(csv.reader(f), [])}
    for table, marker in _TABLES:
        if marker in header:
            return table
    return None


def _rows(path: Path, wanted: tuple[str, ...], stats: Stats) -> Iterator[dict[str, str]]:
    """Rows of one table as {column: stripped text}, counted; short rows are skipped."""
    with open_text(path) as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None:
            return
        col = column_index(path, header, wanted)
        need = max(col.values()) + 1
        for row in rows:
            stats.rows += 1
            if len(row) < need:
                stats.skip(f"{path.name}: too few columns")
                continue
            yield {name: row[i].strip() for name, i in col.items()}


def _load(table: str, path: Path, look: _Lookups, stats: Stats) -> int:
    n = 0
    if table == "payments":
        for row in _rows(path, PAYMENTS, stats):
            n += 1
            value = _number(row["payment_value"])
            if value is None:
                stats.skip("payments: bad payment_value")
                continue
            look.payments[row["order_id"]].append((row["payment_type"], value))
    elif table == "items":
        for row in _rows(path, ITEMS, stats):
            n += 1
            price, freight = _number(row["price"]), _number(row["freight_value"])
            if price is None or freight is None or not row["product_id"]:
                stats.skip("items: bad price, freight_value or product_id")
                continue
            look.items[row["order_id"]].append((row["product_id"], price, freight))
    elif table == "products":
        for row in _rows(path, PRODUCTS, stats):
            n += 1
            if row["product_category_name"]:
                look.category_of[row["product_id"]] = row["product_category_name"]
    elif table == "translation":
        for row in _rows(path, TRANSLATION, stats):
            n += 1
            if row["product_category_name_english"]:
                look.english[row["product_category_name"]] = row["product_category_name_english"]
    else:
        for row in _rows(path, CUSTOMERS, stats):
            n += 1
            if row["customer_unique_id"]:
                look.customer[row["customer_id"]] = row["customer_unique_id"]
    return n


def _order(row: dict[str, str], look: _Lookups, seen: set[str], stats: Stats) -> list[Event]:
    order_id, status = row["order_id"], row["order_status"]
    if order_id in seen:
        stats.skip("orders: order_id seen before")
        return []
    seen.add(order_id)
    if not order_id or not row["customer_id"]:
        stats.skip("orders: no order_id or customer_id")
        return []
    times: dict[str, int | None] = {}
    for name in ORDERS[3:]:
        text = row[name]
        times[name] = _local_ms(text) if text else None
        if text and times[name] is None:
            stats.skip(f"orders: bad {name}")
            return []
    created = times["order_purchase_timestamp"]
    if created is None:
        stats.skip("orders: no order_purchase_timestamp")
        return []
    pays = look.payments.get(order_id, [])
    lines = look.items.get(order_id, [])
    if pays:
        amount = money(sum(value for _, value in pays))
    elif lines:
        amount = money(sum(price + freight for _, price, freight in lines))
    else:
        stats.skip("orders: no amount (no payments and no items)")
        return []
    method = _method(pays)
    deadline = created + PAY_WINDOW_MS.get(method or "", DEFAULT_PAY_WINDOW_MS)
    user_id = look.customer.get(row["customer_id"], row["customer_id"])
    rid = row_id(DATASET, *row.values())
    common: dict[str, Any] = {"order_id": order_id, "timezone": TIMEZONE}
    events = [
        event(
            "order_created",
            rid,
            user_id,
            created,
            **common,
            items=_items(lines, look),
            amount=amount,
            pay_deadline=format_ts(deadline),
        ),
        event("cashier_enter", rid, user_id, created + 1, **common, amount=amount, method=method),
    ]
    carrier = times["order_delivered_carrier_date"]
    delivered = times["order_delivered_customer_date"]
    paid = times["order_approved_at"]
    if paid is None and status in PAID_STATUSES:
        paid = carrier or delivered or created
    if paid is not None:
        paid = max(paid, created + 2)
        events.append(
            event("payment_success", rid, user_id, paid, **common, amount=amount, method=method)
        )
        events.append(
            event("order_paid", rid, user_id, paid + 1, **common, amount=amount, method=method)
        )
    if status in CANCELLED:
        if paid is None:  # never paid: cancelled when the payment window ran out
            cancelled = deadline
        else:  # just after the last stage the order reached
            cancelled = max(t for t in (paid + 1, carrier, delivered) if t is not None) + 1
        events.append(event("order_cancelled", rid, user_id, cancelled, **common, reason=status))
    return events


def _items(lines: list[tuple[str, float, float]], look: _Lookups) -> list[dict[str, Any]]:
    """One item per product and unit price, with the number of units as qty."""
    qty: Counter[tuple[str, float]] = Counter((sku, price) for sku, price, _ in lines)
    items = []
    for (sku, price), n in qty.items():
        item: dict[str, Any] = {"sku": sku, "price": price, "qty": n}
        category = look.category(sku)
        if category:
            item["category"] = category
        items.append(item)
    return items


def _method(pays: list[tuple[str, float]]) -> str | None:
    """The payment type that paid the most (the first such, in payment order)."""
    totals: dict[str, float] = {}
    for kind, value in pays:
        if kind and kind != "not_defined":
            totals[kind] = totals.get(kind, 0.0) + value
    return max(totals, key=lambda k: totals[k]) if totals else None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 <= value <= 1e9 else None


def _local_ms(text: str) -> int | None:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_LOCAL)
    return epoch_ms(parsed)
