"""The batch step: raw input records in, commands and dead letters out.

``PartitionCore.step(records, now_ms=...)`` is the one entry point shared by the
Faust worker, replay and the tests. It owns the journeys of one partition, that
partition's deadline index and watermark, and the set of journeys a batch touched
(written to the changelog at the next checkpoint).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

import orjson

from stream.domain.attribution import W_AT, W_ID, new_watch
from stream.domain.budget import Claim, LedgerFold, PartitionBudget, budget_day
from stream.domain.deadlines import DeadlineIndex
from stream.domain.events import Event, decode
from stream.domain.facts import (
    Decision,
    Fact,
    build_command,
    decision_record,
    fact_from_list,
    fact_to_list,
)
from stream.domain.guard import budgeted, judge, offer_scope
from stream.domain.guardrails import Guardrails
from stream.domain.journey import Journey, event_key
from stream.domain.progress import SEEN, TAKE, Progress
from stream.domain.store import JourneyStore, encode_snapshot
from stream.domain.timing import Timing
from stream.domain.watermark import Watermark
from stream.errors import InvalidEvent

#: what a parked fact waits for: bucket, unit, budget day and its cost
Wait = tuple[str, str, int, float]


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
    #: partitions sharing the budgets (each gets a slice)
    partitions: int = 1
    #: tells this process's budget claims from others' (the adapter passes a unique id)
    origin: str = ""
    #: keep the next offset of each input topic with the state (stream.domain.progress):
    #: the worker does; replay reads files, where order is all there is
    track_offsets: bool = False


@dataclass(slots=True)
class StepOutput:
    commands: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    events_by_type: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    #: (pattern, rule id or "", result) per fact; result: emitted, deferred, no_rule, or the
    #: suppression reason (holdout, cap, stacking, quiet_hours, budget, shadow, ...)
    decisions: list[tuple[str, str, str]] = field(default_factory=list)
    #: decision and attribution records for the outcomes topic
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    #: deferred commands released in this step (also in ``commands``)
    released: int = 0
    #: records at offsets the state has seen already, skipped
    replayed: int = 0
    #: records past a gap in their topic's offsets, not taken in (to be read again
    #: from the offset in ``PartitionCore.progress.gaps``)
    held: list[Record] = field(default_factory=list)

    def extend(self, other: StepOutput) -> None:
        self.commands.extend(other.commands)
        self.dead_letters.extend(other.dead_letters)
        self.facts.extend(other.facts)
        self.events_by_type.update(other.events_by_type)
        self.duplicates += other.duplicates
        self.decisions.extend(other.decisions)
        self.outcomes.extend(other.outcomes)
        self.released += other.released
        self.replayed += other.replayed
        self.held.extend(other.held)


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
        guardrails: Guardrails | None = None,
        ledger: LedgerFold | None = None,
    ):
        self.partition = partition
        self.timing = timing
        self._decider = decider
        self.config = config
        self.guardrails = guardrails or Guardrails()
        g = self.guardrails
        # Without a shared ledger (replay, tests) the pool is granted on the spot.
        sync = ledger is None
        if ledger is None:
            ledger = LedgerFold(g.buckets, config.partitions, g.slice_share)
        self.budget = PartitionBudget(partition, ledger, sync=sync, origin=config.origin)
        #: live while in use, snapshot bytes from the checkpoint on (stream.domain.store)
        self.journeys = JourneyStore()
        self.deadlines = DeadlineIndex()
        self.watermark = Watermark(config.lateness_ms, config.sources, config.idle_ms, now_ms)
        self.progress = Progress()
        self.dirty: set[str] = set()
        self.outboxed: set[str] = set()
        #: stamped on each outbox entry: the delivery it goes out with
        self.outbox_seq = 1
        #: every outbox entry stamped up to this is published (kept with the watermark,
        #: so a delivery needs no changelog record per journey)
        self.delivered_seq = 0
        #: shoppers with facts waiting for a budget claim to settle
        self.parked: set[str] = set()
        #: the decisions of parked facts, by fact (user, pattern, subject, trigger), made
        #: by the current decider (a new one clears them): a retry needs a new verdict,
        #: not a new decision
        self._parked_decisions: dict[tuple[str, str, str, str], Decision] = {}
        #: per shopper, what each of its parked facts waits for (bucket, unit, day,
        #: cost), when every one of them is known: a retry can leave the shopper alone
        #: without reading its journey
        self._waits: dict[str, list[Wait]] = {}
        self._last_watermark: bytes | None = None
        #: restored from a checkpoint: journeys may be behind its watermark (see _start)
        self._restored = False

    # -- the batch step -------------------------------------------------------------

    def step(self, records: Iterable[Record], *, now_ms: int | None) -> StepOutput:
        """Apply a batch of records in order.

        ``now_ms`` is the wall-clock time of the batch in live mode (used for the
        future-timestamp bound, idle detection and ``decided_at``); replay passes
        ``None`` and event time stands in for it.
        """
        out = self._start(now_ms)
        wm = self.watermark
        max_future = self.config.max_future_ms
        check = self.progress.check if self.config.track_offsets else None
        for rec in records:
            if check is not None:
                seen = check(rec.topic, rec.offset)
                if seen != TAKE:
                    if seen == SEEN:
                        out.replayed += 1
                    else:
                        out.held.append(rec)
                    continue
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
            key = event_key(ev.event_id)
            if journey is not None and journey.is_duplicate(ev, key):
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
            self._apply(journey, ev, key, rec, out, now_ms)
        return out

    def _apply(
        self,
        journey: Journey,
        ev: Event,
        key: int,
        rec: Record,
        out: StepOutput,
        now_ms: int | None,
    ) -> None:
        facts = journey.on_item(ev, self.timing, key)
        if facts and rec.timestamp_ms is not None:
            facts = [replace(f, received_ms=rec.timestamp_ms) for f in facts]
        self._after_change(journey)
        watermark = self.watermark.observe(rec.kind, ev.ts, now_ms)
        if watermark is not None:
            self._fire_due(watermark, out, now_ms)
        if facts:
            for fact in facts:
                self._decide(journey, fact, out, now_ms)
            self._after_change(journey)  # a decision may start a watch or defer a command

    def advance(self, *, now_ms: int, caught_up: bool = True) -> StepOutput:
        """Live mode only: let silent sources stop holding the watermark back.

        ``caught_up``: the consumer has no backlog on this partition's topics (see
        :meth:`Watermark.refresh`).
        """
        out = self._start(now_ms)
        if self.watermark.refresh(now_ms, caught_up):
            assert self.watermark.value is not None
            self._fire_due(self.watermark.value, out, now_ms)
        return out

    def finish(self, until_ms: int) -> StepOutput:
        """Replay only: the log ended; let the watermark reach ``until_ms`` (the data's
        end, so a deadline after the last event never fires) and fire what is due."""
        out = self._start(None)
        wm = self.watermark
        if wm.value is None or wm.value < until_ms:
            wm.value = until_ms
            self._fire_due(until_ms, out, None)
        return out

    @property
    def decider(self) -> Decider:
        return self._decider

    @decider.setter
    def decider(self, decider: Decider) -> None:
        """New rules (a reload): what parked facts were decided with no longer holds, and
        they are decided afresh when retried."""
        self._decider = decider
        self._parked_decisions.clear()
        self._waits.clear()

    def _start(self, now_ms: int | None) -> StepOutput:
        """A step's output; the first after a restore first brings the journeys that
        drifted before the checkpoint (JourneyStore.drift) up to its watermark. That
        only applies what they buffered: whatever fell due before that watermark was
        decided, and written, before the checkpoint."""
        out = StepOutput()
        if self._restored:
            self._restored = False
            if self.watermark.value is not None:
                self._fire_due(self.watermark.value, out, now_ms)
        return out

    def _fire_due(self, watermark: int, out: StepOutput, now_ms: int | None) -> None:
        # Journeys ask for a watermark strictly past their deadline (notify_at = due + 1).
        horizon = self.config.horizon_ms
        for user in self.deadlines.pop_due(watermark):
            journey = self.journeys.get(user)
            if journey is None:
                continue

            def on_fact(fact: Fact, journey: Journey = journey) -> None:
                self._decide(journey, fact, out, now_ms)

            def on_release(
                command: dict[str, Any], wanted: bool, journey: Journey = journey
            ) -> None:
                if wanted:
                    self._send(journey, "i", command, out.commands)
                    out.released += 1
                else:
                    self._refund(journey, command)

            facts, deferred = len(out.facts), len(journey.deferred)
            journey.on_notify(watermark, horizon, on_fact, on_release)
            if journey.outcomes:
                for record in journey.outcomes:
                    self._send(journey, "o", record, out.outcomes)
                journey.outcomes.clear()
            elif (
                len(out.facts) == facts
                and len(journey.deferred) == deferred  # nothing released
                and not journey.is_empty()
            ):
                # Only what the stored snapshot and a later watermark give again: buffered
                # changes applied, state past the horizon dropped. Not worth a changelog
                # record (see JourneyStore.drift).
                self.deadlines.schedule(journey.user_id, journey.notify_at(horizon))
                self.journeys.drift(journey.user_id)
                continue
            self._after_change(journey)

    def _refund(self, journey: Journey, command: dict[str, Any]) -> None:
        """A command held by quiet hours whose aim was met before its release time (the
        shopper converted or cancelled) is dropped: its budget charge is returned."""
        cost = command.get("cost")
        if isinstance(cost, dict) and cost.get("bucket"):
            charge = [cost["bucket"], cost["unit"], cost["day"], cost["amount"]]
            if charge in journey.charges:
                journey.charges.remove(charge)
                self.budget.refund(cost["bucket"], cost["unit"], cost["day"], cost["amount"])

    def _send(self, journey: Journey, code: str, record: dict[str, Any], to: list[Any]) -> None:
        """Hand a record to the adapter, keeping it in the journey's outbox until delivered:
        a crash between checkpoint and publish re-sends the very same bytes."""
        to.append(record)
        journey.outbox.append([code, record, self.outbox_seq])
        self.outboxed.add(journey.user_id)

    def _decide(
        self,
        journey: Journey,
        fact: Fact,
        out: StepOutput,
        now_ms: int | None,
        decision: Decision | None = None,
    ) -> None:
        """Decide a fact (``decision``: what the decider gave it before it was parked)."""
        out.facts.append(fact)
        if decision is None:
            decision = self.decider.decide(fact)
        if decision is None:
            out.decisions.append((fact.pattern, "", "no_rule"))
            self._send(journey, "o", decision_record(fact, None, "no_rule"), out.outcomes)
            return
        g = self.guardrails
        verdict = judge(journey, fact, decision, g, self.budget)
        if verdict.result == "parked":
            # Short of budget while a claim is in flight: keep the fact (in the snapshot,
            # so a crash keeps it too) and decide it again when the ledger answers.
            out.decisions.append((fact.pattern, decision.rule_id, "parked"))
            journey.parked.append(fact_to_list(fact))
            held = (fact.user_id, fact.pattern, fact.subject, fact.trigger_event_id)
            self._parked_decisions[held] = decision
            self._note_wait(journey, fact, decision)
            self.parked.add(journey.user_id)
            self.dirty.add(journey.user_id)
            return
        record = decision_record(
            fact,
            decision,
            verdict.result,
            reason=verdict.reason,
            arm=verdict.arm,
            release_ms=verdict.release_ms,
        )
        out.decisions.append((fact.pattern, decision.rule_id, verdict.reason or verdict.result))
        self._send(journey, "o", record, out.outcomes)
        if verdict.arm is None:
            return
        # Both arms: counted by caps and stacking, watched for their conversion.
        at = fact.at_ms
        ttl = decision.ttl_ms if decision.ttl_ms is not None else g.offer_ttl_ms
        active_until = at + ttl if decision.cost > 0 else 0
        # Kept in time order whatever order decisions come in (an immediate pattern is
        # decided on arrival, a deadline when the watermark passes it): equal state.
        bisect.insort(journey.sent, [at, fact.pattern, offer_scope(fact), active_until])
        bisect.insort(
            journey.watches,
            new_watch(
                fact.intervention_id,
                fact.pattern,
                decision.rule_id,
                verdict.arm,
                at,
                g.window(fact.pattern),
                fact.fields,
                fact.subject,
            ),
            key=lambda w: (w[W_AT], w[W_ID]),
        )
        if verdict.arm != "treatment":
            return
        if budgeted(decision, g):
            assert decision.bucket is not None and decision.unit is not None
            day = budget_day(at, g.default_timezone)
            self.budget.charge(decision.bucket, decision.unit, day, decision.cost)
            bisect.insort(journey.charges, [decision.bucket, decision.unit, day, decision.cost])
        journey.interventions += 1
        decided_at = now_ms if now_ms is not None else at
        command = build_command(fact, decision, decided_at)
        if budgeted(decision, g):
            command["cost"] = {
                "bucket": decision.bucket,
                "unit": decision.unit,
                "day": budget_day(at, g.default_timezone),
                "amount": decision.cost,
            }
        if verdict.release_ms is not None:
            command["deferred_until"] = verdict.release_ms
            bisect.insort(
                journey.deferred,
                [verdict.release_ms, command],
                key=lambda d: (d[0], d[1]["intervention_id"]),
            )
        else:
            self._send(journey, "i", command, out.commands)

    def _after_change(self, journey: Journey) -> None:
        self.deadlines.schedule(journey.user_id, journey.notify_at(self.config.horizon_ms))
        self.dirty.add(journey.user_id)

    # -- state ----------------------------------------------------------------------

    def take_dirty(self) -> list[tuple[str, bytes | None]]:
        """Snapshots of the journeys changed since the last call (None: delete).

        Then the journeys untouched since the call before go to rest as their
        snapshot bytes (see :class:`~stream.domain.store.JourneyStore`).
        """
        journeys = self.journeys
        changed: list[tuple[str, bytes | None]] = []
        for user in self.dirty:
            journey = journeys.get(user)
            if journey is None or journey.is_empty():
                journeys.pop(user, None)
                changed.append((user, None))
            else:
                snap = encode_snapshot(journey)
                changed.append((user, snap))
                journeys.saved(user, snap)
        self.dirty.clear()
        journeys.settle()
        return changed

    def take_watermark(self) -> bytes | None:
        """The watermark's snapshot and the input offsets taken in (one record, so
        they are checkpointed together), if either moved since the last call."""
        snap = self._partition_snapshot()
        if snap == self._last_watermark:
            return None
        self._last_watermark = snap
        return snap

    def restore_watermark(self, raw: bytes, now_ms: int | None) -> None:
        snap = orjson.loads(raw)
        self.watermark.restore(snap[:2], now_ms)
        if len(snap) > 2:  # written before offsets were kept: no progress to restore
            self.progress.restore(snap[2])
        if len(snap) > 3:  # written before deliveries were numbered: all redelivered
            self.outbox_seq, self.delivered_seq = snap[3]
        self._last_watermark = self._partition_snapshot()
        self._restored = True

    def _partition_snapshot(self) -> bytes:
        delivery = [self.outbox_seq, self.delivered_seq]
        return orjson.dumps([*self.watermark.snapshot(), self.progress.snapshot(), delivery])

    def retry_parked(self, *, now_ms: int | None) -> StepOutput:
        """Decide again the facts parked for budget (call when a claim settled)."""
        out = self._start(now_ms)
        users, self.parked = self.parked, set()
        for user in sorted(users):
            known = self._waits.get(user)
            if known is not None and all(map(self._short, known)):
                self.parked.add(user)  # every fact would stay as it is: see below
                continue
            journey = self.journeys.get(user)
            self._waits.pop(user, None)
            if journey is None or not journey.parked:
                continue
            facts, journey.parked = journey.parked, []
            changed = False
            for raw in facts:
                fact = fact_from_list(raw)
                held = (fact.user_id, fact.pattern, fact.subject, fact.trigger_event_id)
                decided = self._parked_decisions.pop(held, None)
                if decided is None:
                    # restored (or the rules changed) since it was parked: decide afresh
                    self._decide(journey, fact, out, now_ms)
                elif self._short(self._wait(fact, decided)):
                    # its bucket's claim is still on its way and would not cover it: it
                    # stays as it is (no new verdict, nothing to write)
                    journey.parked.append(raw)
                    self._parked_decisions[held] = decided
                    self._note_wait(journey, fact, decided)
                    self.parked.add(user)
                    continue
                else:
                    self._decide(journey, fact, out, now_ms, decided)
                changed = True
            if changed:
                self._after_change(journey)
        return out

    def _wait(self, fact: Fact, decision: Decision) -> Wait:
        """What a parked decision waits for: its bucket, unit and budget day, and cost."""
        assert decision.bucket is not None and decision.unit is not None  # budgeted
        day = budget_day(fact.at_ms, self.guardrails.default_timezone)
        return (decision.bucket, decision.unit, day, decision.cost)

    def _short(self, wait: Wait) -> bool:
        """The budget would park it again: short, with a claim in flight."""
        bucket, unit, day, cost = wait
        budget = self.budget
        return budget.awaiting(bucket, unit, day) and not budget.covers(bucket, unit, day, cost)

    def _note_wait(self, journey: Journey, fact: Fact, decision: Decision) -> None:
        """Keep ``self._waits`` whole for the shopper, or drop it (a restored fact
        parked before it is not known)."""
        user = journey.user_id
        if len(journey.parked) == 1:
            self._waits[user] = [self._wait(fact, decision)]
            return
        known = self._waits.get(user)
        if known is not None:
            known.append(self._wait(fact, decision))

    def take_claims(self) -> list[Claim]:
        """Budget claims for the shared ledger (none when the ledger is local)."""
        return self.budget.take_claims()

    def delivered(self) -> None:
        """Everything handed out so far is published: empty the outboxes.

        The next checkpoint records this once, in the partition's watermark record
        (``delivered_seq``), not in each journey: a journey's stored snapshot may keep
        entries that were delivered since, and :meth:`restore` drops them.
        """
        if not self.outboxed:
            return
        journeys = self.journeys
        for user in self.outboxed:
            journey = journeys.get(user)
            if journey is None or not journey.outbox:
                continue
            journey.outbox.clear()
            if journey.is_empty():
                self.dirty.add(user)  # nothing left: deleted at the next checkpoint
            else:
                journeys.drift(user)
        self.outboxed.clear()
        self.delivered_seq = self.outbox_seq
        self.outbox_seq += 1

    def restore(self, snapshots: Iterable[tuple[str, bytes]]) -> list[tuple[str, dict[str, Any]]]:
        """Rebuild journeys, the deadline index and the budget spent from stored snapshots.

        Returns the records found in outboxes as (topic code, record): checkpointed,
        maybe never published ("i" interventions, "o" outcomes). Publish them (again:
        consumers deduplicate by id), then call :meth:`delivered`. Restore the
        watermark first: its record says which deliveries went out (entries stamped
        up to ``delivered_seq`` are dropped, not repeated).
        """
        undelivered: list[tuple[str, dict[str, Any]]] = []
        charges: list[tuple[str, str, int, float]] = []
        delivered = self.delivered_seq
        for user, stored in snapshots:
            raw = stored
            journey = Journey.from_snapshot(user, orjson.loads(raw))
            if journey.outbox:
                # entries from before deliveries were numbered have no number: repeated
                kept = [e for e in journey.outbox if len(e) < 3 or e[2] > delivered]
                if len(kept) < len(journey.outbox):
                    journey.outbox = kept
                    if journey.is_empty():
                        self.dirty.add(user)  # only delivered records kept it: delete it
                        continue
                    raw = encode_snapshot(journey)
                undelivered.extend((entry[0], entry[1]) for entry in kept)
                if kept:
                    self.outboxed.add(user)
            self.journeys.rest(user, raw)
            self.deadlines.schedule(user, journey.notify_at(self.config.horizon_ms))
            charges.extend((c[0], c[1], c[2], c[3]) for c in journey.charges)
            if journey.parked:
                self.parked.add(user)
        self.budget.restore(charges)
        return undelivered

    @property
    def pending_deadlines(self) -> int:
        return len(self.deadlines)
