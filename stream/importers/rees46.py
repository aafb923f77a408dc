"""REES46 "eCommerce behavior data from multi category store" to goldenflow events.

Columns: event_time, event_type, product_id, category_id, category_code, brand, price,
user_id, user_session. ``view`` becomes detail_view, ``cart`` cart_add,
``remove_from_cart`` cart_remove, and ``purchase`` a paid purchase (checkout, order,
payment; see :func:`~stream.importers.common.paid_purchase`). docs/importers.md has
the full mapping.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from stream.domain.timeutil import epoch_ms
from stream.importers.common import (
    Event,
    Stats,
    column_index,
    event,
    open_text,
    paid_purchase,
    row_id,
    source_files,
)

DATASET: Final = "rees46"
COLUMNS: Final = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)
#: Category of products whose category_code is empty (about a third of rows).
UNCATEGORIZED: Final = "uncategorized"
MAX_PRICE: Final = 1e9
#: event_type values that become one goldenflow event of the same fields
ONE_EVENT: Final = {"view": "detail_view", "remove_from_cart": "cart_remove"}


def read(sources: Iterable[Path], stats: Stats) -> Iterator[list[Event]]:
    """Yield the events of each source row, file by file, row by row."""
    for path in source_files(sources):
        stats.files += 1
        with open_text(path) as f:
            rows = csv.reader(f)
            header = next(rows, None)
            if header is None:
                continue
            col = column_index(path, header, COLUMNS)
            width = len(header)
            clock = _Clock()
            for row in rows:
                stats.rows += 1
                if len(row) != width:
                    stats.skip(f"wrong number of columns (want {width}; a cut-off row?)")
                    continue
                group = _events(row, col, clock, stats)
                if group:
                    yield group


def _events(row: list[str], col: dict[str, int], clock: _Clock, stats: Stats) -> list[Event]:
    user_id = row[col["user_id"]].strip()
    sku = row[col["product_id"]].strip()
    kind = row[col["event_type"]].strip()
    ts = clock.ms(row[col["event_time"]])
    if ts is None:
        stats.skip("bad event_time")
        return []
    if not user_id:
        stats.skip("no user_id")
        return []
    if not sku:
        stats.skip("no product_id")
        return []
    text = row[col["price"]].strip()
    price: float | None = None
    if text:
        try:
            price = float(text)
        except ValueError:
            price = math.nan
        if not math.isfinite(price) or not 0 <= price <= MAX_PRICE:
            stats.skip("bad price")
            return []
    code = row[col["category_code"]].strip()
    category_id = row[col["category_id"]].strip()
    if code:
        category = code
    elif category_id:
        category = f"{UNCATEGORIZED}.{category_id}"
    else:
        category = UNCATEGORIZED
    session = row[col["user_session"]].strip() or None
    rid = row_id(DATASET, *row)
    if kind in ONE_EVENT:
        return [
            event(
                ONE_EVENT[kind],
                rid,
                user_id,
                ts,
                sku=sku,
                category=category,
                price=price,
                session=session,
            )
        ]
    if kind not in ("cart", "purchase"):
        stats.skip(f"unknown event_type {kind[:40]!r}")
        return []
    if price is None:
        stats.skip(f"no price on a {kind} row")
        return []
    if kind == "cart":
        return [
            event(
                "cart_add",
                rid,
                user_id,
                ts,
                sku=sku,
                category=category,
                price=price,
                qty=1,
                session=session,
            )
        ]
    item = {"sku": sku, "category": category, "price": price, "qty": 1}
    return paid_purchase(rid, user_id, ts, [item], session=session)


class _Clock:
    """``2019-10-01 00:00:00 UTC`` to epoch ms; rows come in time order, so reuse the last."""

    def __init__(self) -> None:
        self.text = ""
        self.value: int | None = None

    def ms(self, text: str) -> int | None:
        if text != self.text:
            self.text, self.value = text, _parse(text)
        return self.value


def _parse(text: str) -> int | None:
    stamp = text.strip()
    if stamp.endswith(" UTC"):
        stamp = stamp[:-4]
    try:
        parsed = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return epoch_ms(parsed)
