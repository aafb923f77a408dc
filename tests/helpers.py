"""Small builders shared by the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from stream.decide.rulebook import load_rulebook
from stream.domain.engine import CoreConfig, PartitionCore, Record
from stream.domain.events import TYPE_KIND
from stream.domain.timeutil import MINUTE

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "rules"
T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z


class EventMaker:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, type_: str, user: str, ts: int, **fields: Any) -> dict[str, Any]:
        self.n += 1
        return {"event_id": f"ev-{self.n}", "type": type_, "user_id": user, "ts": ts, **fields}

    def add(
        self,
        user: str,
        ts: int,
        sku: str = "sku-1",
        category: str = "fresh_food",
        price: float = 10.0,
        **fields: Any,
    ) -> dict[str, Any]:
        return self("cart_add", user, ts, sku=sku, category=category, price=price, **fields)


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.25) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def rec(event: dict[str, Any] | bytes, kind: str | None = None) -> Record:
    if isinstance(event, bytes):
        return Record(kind or "cart", event)
    return Record(kind or TYPE_KIND[event["type"]], orjson.dumps(event))


def core(config: CoreConfig | None = None, rules: Path = RULES) -> PartitionCore:
    book = load_rulebook(rules)
    return PartitionCore(0, book.timing, book.decider, config or CoreConfig(lateness_ms=MINUTE))
