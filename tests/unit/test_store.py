"""Journeys live while in use and rest as snapshot bytes: resting changes nothing."""

from __future__ import annotations

import orjson

from stream.bench.traffic import steady_events
from stream.decide.rulebook import load_rulebook
from stream.domain.engine import CoreConfig, PartitionCore, Record
from stream.domain.journey import Journey
from stream.domain.store import JourneyStore, encode_snapshot
from stream.domain.timeutil import DAY
from tests.helpers import RULES

T0 = 1_790_000_000_000


def journey(user: str, prior: int) -> Journey:
    j = Journey(user)
    j.prior = prior
    return j


def test_a_journey_untouched_for_a_whole_checkpoint_rests_as_its_saved_bytes() -> None:
    store = JourneyStore()
    store["busy"] = journey("busy", 1)
    store["quiet"] = journey("quiet", 2)
    saved = encode_snapshot(store["quiet"])
    store.saved("quiet", saved)
    store.settle()  # both were used since the store began: both stay live
    assert sorted(store.live()) == ["busy", "quiet"]
    assert store.get("busy") is not None
    store.settle()  # "quiet" untouched since the last settle: at rest, as saved
    assert store.live() == ["busy"]
    assert store._rest["quiet"] is saved
    assert store.get("quiet").prior == 2  # type: ignore[union-attr]
    assert sorted(store.live()) == ["busy", "quiet"]
    assert "quiet" not in store._rest  # never both live and at rest
    del store["quiet"]
    store.settle()
    store.settle()
    assert list(store) == ["busy"]
    assert store._rest.keys() == {"busy"} and not store.live()


def test_keeping_journeys_live_between_checkpoints_decides_exactly_like_resting_them() -> None:
    """A core whose journeys all rest at every checkpoint (each one round-trips through
    its snapshot) and a core that keeps the recently used ones live give equal
    outputs, batch by batch, and equal journeys at the end."""
    book = load_rulebook(RULES)

    def make() -> PartitionCore:
        return PartitionCore(0, book.timing, book.decider, CoreConfig(), guardrails=book.guardrails)

    kept, rested = make(), make()
    values = [v for _, _, v in steady_events(12_000, 600, T0, span_ms=20 * DAY)]
    for size in (37, 400, 1):  # batch sizes vary: what stays live between batches too
        for i in range(0, 4_000, size):
            batch = [Record(None, v) for v in values[:4_000][i : i + size]]
            a = kept.step(batch, now_ms=None)
            b = rested.step(batch, now_ms=None)
            assert orjson.dumps(a.commands) == orjson.dumps(b.commands)
            assert orjson.dumps(a.outcomes) == orjson.dumps(b.outcomes)
            for core in (kept, rested):
                core.take_dirty()
                core.delivered()
            store = rested.journeys
            for user in store.live():
                store.rest(user, encode_snapshot(store[user]))
        values = values[4_000:]
    assert kept.journeys.live(), "some journeys stayed live between checkpoints"
    ends = [{u: encode_snapshot(c.journeys[u]) for u in c.journeys} for c in (kept, rested)]
    assert ends[0] == ends[1]


def test_a_drifted_journey_rests_as_fresh_bytes_and_says_so() -> None:
    store = JourneyStore()
    store["ann"] = journey("ann", 1)
    store.saved("ann", encode_snapshot(store["ann"]))
    store["ann"].prior = 2  # moved on in a way its saved bytes give again
    store.drift("ann")
    store.settle()
    assert store.refreshed == []  # still live
    store.settle()
    [(user, raw)] = store.refreshed
    assert user == "ann" and store._rest["ann"] is raw
    assert orjson.loads(raw)[6] == 2  # the journey as it was, not as last saved
    store.settle()
    assert store.refreshed == []
