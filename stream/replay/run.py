"""Feed a JSONL event log through the same core the workers run, without Kafka.

Event time only: the watermark follows the log (the largest event time minus the
allowed lateness), never a clock, so a log replays the same way every time, byte
for byte. At the end of the log the watermark moves to the last event's time (the
data's end is the horizon: a deadline after it never fires). Budgets use an
in-process ledger that answers at once.
"""

from __future__ import annotations

import gc
import gzip
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import orjson

from stream.decide.rulebook import RuleBook, load_rulebook
from stream.domain.engine import CoreConfig, PartitionCore, Record, StepOutput
from stream.domain.facts import Fact
from stream.errors import GoldenflowError
from stream.replay.stats import LogStats

BATCH = 5_000


class ReplayError(GoldenflowError):
    """The event log cannot be read."""


@dataclass
class ReplayResult:
    """What a replay produced, in memory (and on disk when an output folder is given)."""

    rules_version: str
    commands: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    duplicates: int = 0
    events_by_type: Counter[str] = field(default_factory=Counter)
    facts: Counter[str] = field(default_factory=Counter)
    stats: LogStats = field(default_factory=LogStats)
    seconds: float = 0.0
    #: intervention id -> the fact decided (kept when comparing rule versions)
    facts_by_id: dict[str, Fact] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """A deterministic summary (no timings: two replays of a log give equal bytes)."""
        decisions: Counter[str] = Counter()
        spend: dict[str, dict[str, float]] = {}
        arms: dict[str, Counter[str]] = {"treatment": Counter(), "control": Counter()}
        for rec in self.outcomes:
            if rec["kind"] == "decision":
                decisions[rec["reason"] or rec["result"]] += 1
                if rec["arm"] == "treatment" and rec["cost"] and rec["bucket"]:
                    unit = spend.setdefault(rec["bucket"], {})
                    unit[rec["unit"]] = round(unit.get(rec["unit"], 0.0) + rec["cost"], 2)
            elif rec["arm"] in arms:
                arms[rec["arm"]][rec["result"]] += 1
        return {
            "rules_version": self.rules_version,
            "events": self.events,
            "events_by_type": dict(sorted(self.events_by_type.items())),
            "duplicates": self.duplicates,
            "dead_letters": dict(sorted(Counter(d["code"] for d in self.dead_letters).items())),
            "patterns": dict(sorted(self.facts.items())),
            "decisions": dict(sorted(decisions.items())),
            "commands": dict(sorted(Counter(c["pattern"] for c in self.commands).items())),
            "spend": {b: dict(sorted(u.items())) for b, u in sorted(spend.items())},
            "attribution": {arm: dict(sorted(c.items())) for arm, c in arms.items()},
        }


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.GzipFile(path, "rb"))  # the caller closes it
    return path.open("rb")


def read_log(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of a JSONL file, gzip or plain; blank lines skipped."""
    if not path.is_file():
        raise ReplayError(f"no event log at {path}; give a JSONL file (optionally .gz)")
    try:
        with _open(path) as handle:
            for number, raw in enumerate(handle, 1):
                line = raw.strip()
                if line:
                    yield number, line
    except (OSError, EOFError) as exc:  # e.g. a truncated or not-really-gzip file
        raise ReplayError(f"{path}: cannot read the log to its end ({exc})") from None


def replay(
    path: Path,
    rules: RuleBook | Path,
    *,
    lateness_ms: int = 30_000,
    horizon_ms: int = 7 * 24 * 3_600_000,
    on_progress: Callable[[int], None] | None = None,
    collect_stats: bool = False,
    keep_facts: bool = False,
) -> ReplayResult:
    """Replay the log at ``path`` with the rules (a folder or a loaded rule book)."""
    book = rules if isinstance(rules, RuleBook) else load_rulebook(rules)
    core = PartitionCore(
        0,
        book.timing,
        book.decider,
        CoreConfig(lateness_ms=lateness_ms, horizon_ms=horizon_ms, partitions=1),
        guardrails=book.guardrails,
    )
    result = ReplayResult(book.version)
    take = _keeping_facts if keep_facts else _take
    stats = result.stats
    started = time.perf_counter()
    batch: list[Record] = []
    last_ts: int | None = None
    try:
        for number, line in read_log(path):
            batch.append(Record(None, line, None, path.name, 0, number))
            if len(batch) >= BATCH:
                take(result, core.step(batch, now_ms=None), core)
                # The outputs gathered so far stay until the end: move them out of the
                # cyclic collector's way, or every collection walks them again (a third
                # of a long replay's time went there).
                gc.freeze()
                if collect_stats:
                    stats.observe_batch(batch)
                if on_progress is not None:
                    on_progress(len(batch))
                batch = []
    finally:
        gc.unfreeze()
    if batch:
        take(result, core.step(batch, now_ms=None), core)
        if collect_stats:
            stats.observe_batch(batch)
        if on_progress is not None:
            on_progress(len(batch))
    last_ts = core.watermark.max_event_ms
    if last_ts is not None:
        take(result, core.finish(last_ts), core)
    stats.finish()
    result.seconds = time.perf_counter() - started
    return result


def _take(result: ReplayResult, out: StepOutput, core: PartitionCore) -> None:
    result.commands.extend(out.commands)
    result.outcomes.extend(out.outcomes)
    for dl in out.dead_letters:
        result.dead_letters.append({"line": dl.record.offset, "code": dl.code, "reason": dl.reason})
    result.events += sum(out.events_by_type.values())
    result.events_by_type.update(out.events_by_type)
    result.duplicates += out.duplicates
    result.facts.update(f.pattern for f in out.facts)
    core.delivered()  # nothing to redeliver offline: keep the outboxes empty
    core.take_dirty()


def _keeping_facts(result: ReplayResult, out: StepOutput, core: PartitionCore) -> None:
    for fact in out.facts:
        result.facts_by_id.setdefault(fact.intervention_id, fact)
    _take(result, out, core)


def write_outputs(result: ReplayResult, out_dir: Path) -> dict[str, Path]:
    """interventions.jsonl, outcomes.jsonl, dead_letters.jsonl and summary.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "interventions": out_dir / "interventions.jsonl",
        "outcomes": out_dir / "outcomes.jsonl",
        "dead_letters": out_dir / "dead_letters.jsonl",
        "summary": out_dir / "summary.json",
    }
    for name, records in (
        ("interventions", result.commands),
        ("outcomes", result.outcomes),
        ("dead_letters", result.dead_letters),
    ):
        with files[name].open("wb") as fh:
            for rec in records:
                fh.write(orjson.dumps(rec))
                fh.write(b"\n")
    files["summary"].write_bytes(
        orjson.dumps(result.summary(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    return files
