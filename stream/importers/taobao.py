"""Alibaba Tianchi "UserBehavior" (Taobao) to goldenflow events.

No header; columns user_id, item_id, category_id, behavior_type, timestamp (epoch
seconds). ``pv`` becomes detail_view, ``cart`` cart_add, and the ``buy`` rows of one
shopper in one second become one paid purchase (checkout, order, payment).
``fav`` has no counterpart in the contract and is skipped. The data has no prices:
every item carries :data:`PLACEHOLDER_PRICE`. docs/importers.md has the full mapping.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

from stream.domain.timeutil import epoch_ms
from stream.importers.common import (
    Event,
    ImportFailed,
    Stats,
    event,
    open_text,
    paid_purchase,
    row_id,
    source_files,
)

DATASET: Final = "taobao"
#: Price of every item: the dataset has none (a cart's value is then its unit count).
PLACEHOLDER_PRICE: Final = 1.0
#: Every shopper is taken to be in China (the timestamps are Beijing time).
TIMEZONE: Final = "Asia/Shanghai"
#: Categories are ``taobao.<category_id>``: rules can match one, or all by the parent.
CATEGORY_PREFIX: Final = "taobao"
_BEIJING = timezone(timedelta(hours=8))
#: The dataset's official range, 2017-11-25 to 2017-12-03 Beijing time; rows outside it
#: (a handful, some months off) are skipped.
FIRST_MS: Final = epoch_ms(datetime(2017, 11, 25, tzinfo=_BEIJING))
END_MS: Final = epoch_ms(datetime(2017, 12, 4, tzinfo=_BEIJING))
WIDTH: Final = 5


def read(sources: Iterable[Path], stats: Stats) -> Iterator[list[Event]]:
    """Yield the events of each row (of each buy group), file by file, row by row."""
    for path in source_files(sources):
        stats.files += 1
        with open_text(path) as f:
            buys: list[list[str]] = []
            for n, row in enumerate(csv.reader(f)):
                if n == 0 and len(row) != WIDTH:
                    raise ImportFailed(
                        f"{path}: not a Taobao UserBehavior file: the first row has {len(row)} "
                        f"columns; want {WIDTH} (user_id,item_id,category_id,behavior_type,"
                        "timestamp), no header"
                    )
                stats.rows += 1
                if len(row) != WIDTH:
                    stats.skip(f"wrong number of columns (want {WIDTH})")
                    continue
                fields = [v.strip() for v in row]
                user_id, sku, category_id, behaviour, stamp = fields
                try:
                    ts = int(stamp) * 1000
                except ValueError:
                    stats.skip("bad timestamp (a header line?)")
                    continue
                if not FIRST_MS <= ts < END_MS:
                    stats.skip("outside the dataset's dates (2017-11-25..12-03 Beijing time)")
                    continue
                if not (user_id and sku and category_id):
                    stats.skip("no user_id, item_id or category_id")
                    continue
                if buys and (buys[0][0], buys[0][4]) != (user_id, stamp):
                    yield _purchase(buys)
                    buys = []
                category = f"{CATEGORY_PREFIX}.{category_id}"
                rid = row_id(DATASET, *fields)
                if behaviour == "pv":
                    yield [
                        event(
                            "detail_view",
                            rid,
                            user_id,
                            ts,
                            sku=sku,
                            category=category,
                            timezone=TIMEZONE,
                        )
                    ]
                elif behaviour == "cart":
                    yield [
                        event(
                            "cart_add",
                            rid,
                            user_id,
                            ts,
                            sku=sku,
                            category=category,
                            price=PLACEHOLDER_PRICE,
                            qty=1,
                            timezone=TIMEZONE,
                        )
                    ]
                elif behaviour == "buy":
                    buys.append(fields)
                elif behaviour == "fav":
                    stats.skip("fav (favourite): no such event in the contract")
                else:
                    stats.skip(f"unknown behavior_type {behaviour[:40]!r}")
            if buys:
                yield _purchase(buys)


def _purchase(buys: list[list[str]]) -> list[Event]:
    """One paid purchase of the buy rows of one shopper in one second (rows in file order)."""
    user_id, stamp = buys[0][0], buys[0][4]
    items: dict[str, dict[str, Any]] = {}
    for _, sku, category_id, _, _ in buys:
        item = items.get(sku)
        if item is None:
            items[sku] = {
                "sku": sku,
                "category": f"{CATEGORY_PREFIX}.{category_id}",
                "price": PLACEHOLDER_PRICE,
                "qty": 1,
            }
        else:
            item["qty"] += 1
    rid = row_id(DATASET, *(field for row in buys for field in row))
    return paid_purchase(rid, user_id, int(stamp) * 1000, list(items.values()), timezone=TIMEZONE)
