"""Budget buckets shared by every partition: slices, a claims ledger, and spend.

A bucket has a daily budget per unit (a currency, or points). The stream is
partitioned, so the budget is too:

* every partition starts the day with a fixed **slice** (``base_share`` of the
  budget split evenly), which it may spend without asking anyone;
* the rest is a **pool**, handed out in claims through a ledger: an ordered log
  (one Kafka partition in production, a list in replay and tests) that every
  worker folds the same way, first claim first served, never granting more than
  the pool holds.

A partition spends only what it holds (slice plus granted claims), and what it
spent lives in its journeys' snapshots (checkpointed with the commands that
spent it), so neither a crash nor a replayed batch nor a rebalance can make the
total spend exceed the budget: at most, budget is stranded in a slice until the
day ends.

Pure: no clock reads, no Kafka. Days are whole days of event time in the budget
time zone, numbered as proleptic ordinals.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: (bucket, unit, day)
Key = tuple[str, str, int]


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


#: date(1970, 1, 1).toordinal()
EPOCH_ORDINAL = 719_163
DAY_MS = 86_400_000


def budget_ordinal(at_ms: int) -> int:
    """The UTC day ordinal of an event time (within a day of any zone's)."""
    return at_ms // DAY_MS + EPOCH_ORDINAL


def budget_day(at_ms: int, timezone: str = "UTC") -> int:
    """The budget day of an event time: its local date's ordinal in ``timezone``."""
    zone = _zone(timezone) or UTC
    return datetime.fromtimestamp(at_ms / 1000, tz=zone).date().toordinal()


@dataclass(frozen=True, slots=True)
class Bucket:
    """A budget bucket: daily amount per unit, e.g. ``{"USD": 500, "points": 100000}``."""

    name: str
    daily: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Claim:
    """A partition asking the pool for more of a bucket's budget on one day."""

    claim_id: str
    bucket: str
    unit: str
    day: int
    partition: int
    amount: float

    def to_record(self) -> dict[str, Any]:
        return {
            "claim_id": self.claim_id,
            "bucket": self.bucket,
            "unit": self.unit,
            "day": self.day,
            "partition": self.partition,
            "amount": self.amount,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Claim:
        return cls(
            str(rec["claim_id"]),
            str(rec["bucket"]),
            str(rec["unit"]),
            int(rec["day"]),
            int(rec["partition"]),
            float(rec["amount"]),
        )


class LedgerFold:
    """The deterministic reading of the claims log: who was granted what.

    Every worker folds the same log in the same order and so agrees on every
    grant. A claim is served from what the pool has left at its place in the log
    (partly, if the pool runs short); a claim seen twice (a producer retry) counts
    once.

    Only the latest day in the log and the day before can still be granted from the
    pool: a claim for an older day is granted nothing, the pool of such a day is
    empty (a partition may still spend its slice of it), and the fold forgets it
    (its grants, the claim ids it has seen and the claims it keeps), so the fold
    stays as small as two days of claims however long the worker runs.
    """

    def __init__(self, buckets: Mapping[str, Bucket], partitions: int, base_share: float) -> None:
        self.buckets = dict(buckets)
        self.partitions = partitions
        self.base_share = base_share
        self.granted: dict[Key, float] = defaultdict(float)  # pool handed out, all partitions
        self.grants: dict[tuple[str, str, int, int], float] = defaultdict(float)
        #: the latest budget day of any claim folded so far
        self.latest_day: int | None = None
        #: the claims of the days the pool can still grant, in log order (folding them
        #: again, e.g. with changed budgets, gives the same grants)
        self.claims: list[Claim] = []
        self._seen: set[str] = set()  # ids of the claims kept

    def grantable(self, day: int) -> bool:
        """The pool can still grant that day: the latest day in the log, or the day
        before (or any day, before the first claim)."""
        return self.latest_day is None or day >= self.latest_day - 1

    def total(self, bucket: str, unit: str) -> float:
        spec = self.buckets.get(bucket)
        return float(spec.daily.get(unit, 0.0)) if spec is not None else 0.0

    def slice(self, bucket: str, unit: str) -> float:
        """Each partition's fixed share of the day's budget."""
        return round(self.total(bucket, unit) * self.base_share / self.partitions, 6)

    def pool(self, bucket: str, unit: str, day: int) -> float:
        """What the pool can still grant that day (nothing, once the day is over)."""
        if not self.grantable(day):
            return 0.0
        total = self.total(bucket, unit)
        slices = self.slice(bucket, unit) * self.partitions
        return max(0.0, round(total - slices - self.granted[(bucket, unit, day)], 6))

    def apply(self, claim: Claim) -> float:
        """Fold one claim; return what it was granted."""
        if claim.amount <= 0 or not self.grantable(claim.day) or claim.claim_id in self._seen:
            return 0.0
        self._seen.add(claim.claim_id)
        self.claims.append(claim)
        if self.latest_day is None or claim.day > self.latest_day:
            self.latest_day = claim.day
            self.forget_before(claim.day - 1)
        if not 0 <= claim.partition < self.partitions:
            return 0.0
        grant = min(claim.amount, self.pool(claim.bucket, claim.unit, claim.day))
        if grant > 0:
            self.granted[(claim.bucket, claim.unit, claim.day)] += grant
            self.grants[(claim.bucket, claim.unit, claim.day, claim.partition)] += grant
        return grant

    def granted_to(self, partition: int, bucket: str, unit: str, day: int) -> float:
        return self.grants.get((bucket, unit, day, partition), 0.0)

    def forget_before(self, day: int) -> None:
        """Drop days that can no longer be spent (keeps the fold small)."""
        for key in [k for k in self.granted if k[2] < day]:
            del self.granted[key]
        for gkey in [k for k in self.grants if k[2] < day]:
            del self.grants[gkey]
        self.claims = [c for c in self.claims if c.day >= day]
        self._seen = {c.claim_id for c in self.claims}


def read_back(ledger: LedgerFold, budget: PartitionBudget | None, claim: Claim) -> bool:
    """A claim read back from the ledger: fold it, and settle it if ``budget`` (the
    budget of its partition, when this process holds that partition) sent it.

    True if that budget was waiting for it. A claim for a day gone by is settled
    too, though granted nothing: otherwise its partition would wait for it for ever,
    parking every later fact of that bucket and day.
    """
    ledger.apply(claim)
    return budget is not None and budget.settled(claim)


@dataclass(slots=True)
class PartitionBudget:
    """One partition's side: what it may spend (slice + grants) and what it spent.

    ``spent`` is rebuilt from the journeys on restore (each journey keeps the
    charges of its commands), so it is exactly as durable as the commands.
    """

    partition: int
    ledger: LedgerFold
    #: grant the pool synchronously (replay, tests); else claims wait in ``claims``
    sync: bool = False
    #: tells this incarnation's claims apart from an earlier one's (e.g. a process id)
    origin: str = ""
    spent: dict[Key, float] = field(default_factory=lambda: defaultdict(float))
    claims: list[Claim] = field(default_factory=list)
    _asked: dict[Key, str] = field(default_factory=dict)  # claim id in flight per key
    _seq: int = 0

    def allowance(self, bucket: str, unit: str, day: int) -> float:
        ledger = self.ledger
        return ledger.slice(bucket, unit) + ledger.granted_to(self.partition, bucket, unit, day)

    def remaining(self, bucket: str, unit: str, day: int) -> float:
        return self.allowance(bucket, unit, day) - self.spent[(bucket, unit, day)]

    def covers(self, bucket: str, unit: str, day: int, cost: float) -> bool:
        """What this partition holds pays for ``cost`` (within rounding)."""
        return self.remaining(bucket, unit, day) + 1e-9 >= cost

    def can_spend(self, bucket: str, unit: str, day: int, cost: float) -> bool:
        """True if ``cost`` fits what this partition holds; asks the pool when short."""
        if cost <= 0:
            return True
        if self.covers(bucket, unit, day, cost):
            self._top_up(bucket, unit, day, cost)
            return True
        self._claim(bucket, unit, day, cost)
        return self.covers(bucket, unit, day, cost)

    def charge(self, bucket: str, unit: str, day: int, cost: float) -> None:
        if cost > 0:
            self.spent[(bucket, unit, day)] += cost
            self._top_up(bucket, unit, day, cost)

    def refund(self, bucket: str, unit: str, day: int, cost: float) -> None:
        """Return a charge whose command was never sent."""
        key = (bucket, unit, day)
        self.spent[key] = max(0.0, self.spent[key] - cost)

    def _top_up(self, bucket: str, unit: str, day: int, cost: float) -> None:
        """Claim ahead when what is left would not cover a few more commands like this."""
        if self.remaining(bucket, unit, day) < 2 * cost:
            self._claim(bucket, unit, day, cost)

    def _claim(self, bucket: str, unit: str, day: int, cost: float) -> None:
        key = (bucket, unit, day)
        if key in self._asked:  # one claim in flight per bucket and day
            return
        ledger = self.ledger
        pool = ledger.pool(bucket, unit, day)
        if pool <= 0:
            return
        # A chunk: a fair share of what the pool still holds, at least a few commands.
        amount = round(min(pool, max(4 * cost, pool / (2 * ledger.partitions))), 6)
        self._seq += 1
        claim_id = f"{self.origin}/{self.partition}/{day}/{bucket}/{unit}/{self._seq}"
        claim = Claim(claim_id, *key, self.partition, amount)
        if self.sync:
            ledger.apply(claim)
        else:
            self._asked[key] = claim_id
            self.claims.append(claim)

    def take_claims(self) -> list[Claim]:
        claims, self.claims = self.claims, []
        return claims

    @property
    def in_flight(self) -> bool:
        """Any claim of this partition not yet answered by the ledger."""
        return bool(self._asked)

    def awaiting(self, bucket: str, unit: str, day: int) -> bool:
        """A claim for this bucket and day is on its way to the ledger."""
        return (bucket, unit, day) in self._asked

    def settled(self, claim: Claim) -> bool:
        """The ledger folded a claim; True if it was the one this partition waits for."""
        key = (claim.bucket, claim.unit, claim.day)
        if self._asked.get(key) != claim.claim_id:
            return False
        del self._asked[key]
        return True

    def restore(self, charges: Iterable[tuple[str, str, int, float]]) -> None:
        """Rebuild ``spent`` from the charges kept in the restored journeys."""
        self.spent.clear()
        for bucket, unit, day, cost in charges:
            self.spent[(bucket, unit, day)] += cost
