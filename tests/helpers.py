"""Small builders shared by the tests."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

from stream.decide.rulebook import load_rulebook
from stream.domain.engine import CoreConfig, PartitionCore, Record
from stream.domain.events import TYPE_KIND
from stream.domain.guardrails import Guardrails
from stream.domain.timeutil import DAY, HOUR, MINUTE

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


def past_midday(now_ms: int, at_least_ms: int) -> int:
    """The latest 12:00 UTC at least ``at_least_ms`` before ``now_ms``: wall-clock event
    times whose commands no quiet hours of the shipped guardrails hold back, whatever
    the hour of the run."""
    noon = now_ms // DAY * DAY + 12 * HOUR
    while noon > now_ms - at_least_ms:
        noon -= DAY
    return noon


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


def core(
    config: CoreConfig | None = None, rules: Path = RULES, guardrails: Guardrails | None = None
) -> PartitionCore:
    """A core on the shipped rules; guardrails off unless given (detection tests count
    every command)."""
    book = load_rulebook(rules)
    return PartitionCore(
        0,
        book.timing,
        book.decider,
        config or CoreConfig(lateness_ms=MINUTE),
        guardrails=guardrails or Guardrails.off(),
    )


def rules_with_budgets(
    dest: Path, daily: float, *, order_free: bool = True, any_hour: bool = False
) -> Path:
    """A copy of the shipped rules whose every budget is ``daily`` per unit.

    With a large budget and ``order_free``, every guardrail left depends on event time
    alone: runs whose batching and timing differ decide exactly alike. (Caps and
    stacking across an immediate pattern, decided on arrival, and a deadline the
    watermark has not passed yet depend on arrival order; see docs/guardrails.md.)"""
    shutil.copytree(RULES, dest)
    guard = dest / "guardrails.yaml"
    data = yaml.safe_load(guard.read_text())
    for bucket in data["budgets"]["buckets"].values():
        for unit in bucket:
            bucket[unit] = daily
    if order_free:
        data["caps"] = []
        data["stacking"]["enabled"] = False
    if any_hour:  # tests on the wall clock: no quiet hours, no holdout, whatever the hour
        data["quiet_hours"] = {}
        data["holdout"] = {"share": 0.0}
    guard.write_text(yaml.safe_dump(data))
    return dest
