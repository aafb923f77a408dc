"""Figures without Kafka: replay of the benchmark's events, and rule decisions per second."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stream.decide.decider import RulesDecider
from stream.decide.rulebook import RuleBook
from stream.domain.facts import Fact
from stream.replay.run import replay


def write_jsonl(path: Path, values: Iterable[bytes]) -> int:
    """The events' JSON values, one a line; returns how many."""
    n = 0
    with path.open("wb") as fh:
        for value in values:
            fh.write(value)
            fh.write(b"\n")
            n += 1
    return n


def replay_figures(path: Path, book: RuleBook) -> tuple[dict[str, Any], list[Fact]]:
    """Replay the file once through the core: events per second (read, decode, step,
    decide), and the facts detected (what the decider gets in production)."""
    result = replay(path, book, keep_facts=True)
    facts = sum(result.facts.values())
    figures = {
        "events": result.events,
        "seconds": round(result.seconds, 3),
        "events_per_s": round(result.events_per_second, 1),
        "facts": facts,
        "facts_per_event": round(facts / max(result.events, 1), 3),
        "commands": len(result.commands),
    }
    return figures, list(result.facts_by_id.values())


def multiplied(book: RuleBook, times: int, *, remember: bool = True) -> RuleBook:
    """The same rule book with every rule present ``times`` times (under new ids).

    ``remember=False``: its matchers ask the engine about every fact (no answers kept).
    """
    d = book.decider
    if times == 1 and remember:
        return book
    rules = [
        dataclasses.replace(rule, id=f"{rule.id}.x{k}") if k else rule
        for rule in d.rules.values()
        for k in range(times)
    ]
    return dataclasses.replace(
        book,
        decider=RulesDecider(rules, d.intent, f"{book.version}x{times}", remember=remember),
    )


def decisions_per_second(decider: RulesDecider, facts: list[Fact], min_seconds: float) -> float:
    """Call ``decide`` over the facts, round after round, for at least ``min_seconds``."""
    if not facts:
        raise ValueError("no facts to decide")
    done = 0
    started = time.perf_counter()
    while True:
        for fact in facts:
            decider.decide(fact)
        done += len(facts)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return done / elapsed
