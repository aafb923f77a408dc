"""The batch step: raw input records in, commands and dead letters out.

``PartitionCore.step(records, now_ms=...)`` is the one entry point shared by the
Faust worker, replay and the tests. It owns the journeys of one partition, that
partition's deadline index and watermark, and the set of journeys a batch touched
(written to the changelog at the next checkpoint).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

import orjson

from stream.domain.deadlines import DeadlineIndex
from stream.domain.events import Event, decode
from stream.domain.facts import Decision, Fact, build_command
from stream.domain.journey import Journey
from stream.domain.timing import Timing
from stream.domain.watermark import Watermark
from stream.errors import InvalidEvent


class Decider(Protocol):
    """Chooses the intervention for a fact, or none."""

    def decide(self, fact: Fact) -> Decision | None: ...


class Record(NamedTuple):
    """One input message as the adapter received it."""

    kind: str | None  # cart, checkout, cashier, order (None: unknown, e.g. replay)
    value: bytes
    key: bytes | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    timestamp_ms: int | None = None  # the broker record's timestamp


@dataclass(slots=True)
class DeadLetter:
    record: Record
    code: str
    reason: str


@dataclass(slots=True)
class CoreConfig:
    """The core's knobs (a slice of the settings, kept free of adapter types)."""

    lateness_ms: int = 30_000
    idle_ms: int = 5_000
    max_future_ms: int = 24 * 3_600_000
    #: state older than this (event time, behind the watermark) expires
    horizon_ms: int = 7 * 24 * 3_600_000
    #: input topic kinds whose progress the watermark waits for (None: one merged source)
    sources: tuple[str, ...] | None = None


@dataclass(slots=True)
class StepOutput:
    commands: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    events_by_type: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    #: (pattern, rule id or "", result: emitted, no_rule, shadow or disabled) per decision
    decisions: list[tuple[str, str, str]] = field(default_factory=list)

    def extend(self, other: StepOutput) -> None:
        self.commands.extend(other.commands)
        self.dead_letters.extend(other.dead_letters)
        self.facts.extend(other.facts)
        self.events_by_type.update(other.events_by_type)
        self.duplicates += other.duplicates
        self.decisions.extend(other.decisions)


class PartitionCore:
    """Journeys, deadlines and the watermark of one input partition."""

    def __init__(
        self,
        partition: int,
        timing: Timing,
        decider: Decider,
        config: CoreConfig,
        *,
        now_ms: int | None = None,
    ):
        self.partition = partition
        self.timing = timing
        self.decider = decider
        self.config = config
        self.journeys: dict[str, Journey] = {}
        self.deadlines = DeadlineIndex()
        self.watermark = Watermark(config.lateness_ms, config.sources, config.idle_ms, now_ms)
        self.dirty: set[str] = set()
        self.outboxed: set[str] = set()
        self._last_watermark: bytes | None = None

    # -- the batch step -------------------------------------------------------------

    def step(self, records: Iterable[Record], *, now_ms: int | None) -> StepOutput:
        """Apply a batch of records in order.

        ``now_ms`` is the wall-clock time of the batch in live mode (used for the
        future-timestamp bound, idle detection and ``decided_at``); replay passes
        ``None`` and event time stands in for it.
        """
        out = StepOutput()
        wm = self.watermark
        max_future = self.config.max_future_ms
        for rec in records:
            try:
                ev = decode(rec.value, rec.kind)
            except InvalidEvent as exc:
                out.dead_letters.append(DeadLetter(rec, exc.code, exc.reason))
                continue
            if now_ms is not None and ev.ts > now_ms + max_future:
                out.dead_letters.append(
                    DeadLetter(
                        rec,
                        "future_timestamp",
                        f"event time {ev.ts} is more than {max_future} ms ahead of the "
                        f"worker clock {now_ms}; check the producer's clock and units",
                    )
                )
                continue
            journey = self.journeys.get(ev.user_id)
            if journey is not None and journey.is_duplicate(ev):
                out.duplicates += 1
                continue
            if wm.is_late(ev.ts):
                out.dead_letters.append(
                    DeadLetter(
                        rec,
                        "late",
                        f"event time {ev.ts} is behind the partition watermark {wm.value} "
                        f"by more than the allowed lateness ({wm.lateness_ms} ms)",
                    )
                )
                continue
            out.events_by_type[ev.type] += 1
            if journey is None:
                journey = self.journeys[ev.user_id] = Journey(ev.user_id)
            self._apply(journey, ev, rec, out, now_ms)
        return out

    def _apply(
        self, journey: Journey, ev: Event, rec: Record, out: StepOutput, now_ms: int | None
    ) -> None:
        facts = journey.on_item(ev, self.timing)
        if facts and rec.timestamp_ms is not None:
            facts = [replace(f, received_ms=rec.timestamp_ms) for f in facts]
        self._after_change(journey)
        watermark = self.watermark.observe(rec.kind, ev.ts, now_ms)
        if watermark is not None:
            self._fire_due(watermark, out, now_ms)
        for fact in facts:
            self._decide(journey, fact, out, now_ms)

    def advance(self, *, now_ms: int, caught_up: bool = True) -> StepOutput:
        """Live mode only: let silent sources stop holding the watermark back.

        ``caught_up``: the consumer has no backlog on this partition's topics (see
        :meth:`Watermark.refresh`).
        """
        out = StepOutput()
        if self.watermark.refresh(now_ms, caught_up):
            assert self.watermark.value is not None
            self._fire_due(self.watermark.value, out, now_ms)
        return out

    def _fire_due(self, watermark: int, out: StepOutput, now_ms: int | None) -> None:
        # Journeys ask for a watermark strictly past their deadline (notify_at = due + 1).
        for user in self.deadlines.pop_due(watermark):
            journey = self.journeys.get(user)
            if journey is None:
                continue
            facts = journey.on_notify(watermark, self.config.horizon_ms)
            self._after_change(journey)
            for fact in facts:
                self._decide(journey, fact, out, now_ms)

    def _decide(self, journey: Journey, fact: Fact, out: StepOutput, now_ms: int | None) -> None:
        out.facts.append(fact)
        decision = self.decider.decide(fact)
        if decision is None:
            out.decisions.append((fact.pattern, "", "no_rule"))
            return
        live = decision.mode == "live"
        out.decisions.append((fact.pattern, decision.rule_id, "emitted" if live else decision.mode))
        if live:
            decided_at = now_ms if now_ms is not None else fact.at_ms
            command = build_command(fact, decision, decided_at)
            out.commands.append(command)
            # The outbox: a command stays in its journey's snapshot until delivered,
            # so a crash between checkpoint and publish re-sends the very same bytes.
            journey.outbox.append(command)
            journey.interventions += 1
            self.outboxed.add(journey.user_id)

    def _after_change(self, journey: Journey) -> None:
        self.deadlines.schedule(journey.user_id, journey.notify_at(self.config.horizon_ms))
        self.dirty.add(journey.user_id)

    # -- state ----------------------------------------------------------------------

    def take_dirty(self) -> list[tuple[str, bytes | None]]:
        """Snapshots of the journeys changed since the last call (None: delete)."""
        changed: list[tuple[str, bytes | None]] = []
        for user in self.dirty:
            journey = self.journeys.get(user)
            if journey is None or journey.is_empty():
                self.journeys.pop(user, None)
                changed.append((user, None))
            else:
                changed.append((user, orjson.dumps(journey.snapshot())))
        self.dirty.clear()
        return changed

    def take_watermark(self) -> bytes | None:
        """The watermark's snapshot if it moved since the last call, else None."""
        snap = orjson.dumps(self.watermark.snapshot())
        if snap == self._last_watermark:
            return None
        self._last_watermark = snap
        return snap

    def restore_watermark(self, raw: bytes, now_ms: int | None) -> None:
        self.watermark.restore(orjson.loads(raw), now_ms)
        self._last_watermark = orjson.dumps(self.watermark.snapshot())

    def delivered(self) -> None:
        """The commands of the last checkpoint are published: empty the outboxes."""
        for user in self.outboxed:
            journey = self.journeys.get(user)
            if journey is not None and journey.outbox:
                journey.outbox.clear()
                self.dirty.add(user)
        self.outboxed.clear()

    def restore(self, snapshots: Iterable[tuple[str, bytes]]) -> list[dict[str, Any]]:
        """Rebuild journeys and the deadline index from stored snapshots.

        Returns the commands found in outboxes: checkpointed, maybe never published.
        Publish them (again: consumers deduplicate by id), then call :meth:`delivered`.
        """
        undelivered: list[dict[str, Any]] = []
        for user, raw in snapshots:
            journey = Journey.from_snapshot(user, orjson.loads(raw))
            self.journeys[user] = journey
            self.deadlines.schedule(user, journey.notify_at(self.config.horizon_ms))
            if journey.outbox:
                undelivered.extend(journey.outbox)
                self.outboxed.add(user)
        return undelivered

    @property
    def pending_deadlines(self) -> int:
        return len(self.deadlines)
