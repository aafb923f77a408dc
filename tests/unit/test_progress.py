"""Input offsets kept with the state: replays skipped, gaps held back and read again."""

from __future__ import annotations

import orjson

from stream.domain.engine import CoreConfig, PartitionCore, Record
from stream.domain.progress import AHEAD, SEEN, TAKE, Progress
from stream.domain.timeutil import HOUR, MINUTE
from tests.helpers import T0, EventMaker, core


def test_records_are_taken_in_offset_order_and_replays_are_seen() -> None:
    p = Progress()
    assert [p.check("cart", o) for o in (7, 8, 9)] == [TAKE, TAKE, TAKE]
    assert [p.check("cart", o) for o in (7, 9)] == [SEEN, SEEN]
    assert p.check("order", 3) == TAKE  # topics are counted apart
    assert p.snapshot() == {"cart": 10, "order": 4}


def test_a_record_past_a_gap_is_held_until_the_gap_is_read() -> None:
    p = Progress()
    p.check("cart", 0)
    assert p.check("cart", 5) == AHEAD
    assert p.check("cart", 6) == AHEAD
    assert p.gaps == {"cart": 1}
    assert p.snapshot() == {"cart": 1}  # nothing past the gap counts as seen
    assert [p.check("cart", o) for o in range(1, 7)] == [TAKE] * 6  # read again
    assert p.gaps == {}


def test_a_real_gap_is_skipped_to_the_first_record_after_it() -> None:
    p = Progress()
    p.check("cart", 0)
    assert p.check("cart", 3) == AHEAD
    p.skip_gap("cart", 3)
    assert p.gaps == {}
    assert p.check("cart", 3) == TAKE


def test_unknown_offsets_are_not_checked() -> None:
    p = Progress()
    assert [p.check("", -1), p.check("", -1)] == [TAKE, TAKE]
    assert p.snapshot() == {}


def test_restore_never_goes_back() -> None:
    p = Progress()
    p.check("cart", 40)
    p.restore({"cart": 12, "order": 9})
    assert p.snapshot() == {"cart": 41, "order": 9}


def live_core() -> PartitionCore:
    base = core(CoreConfig(lateness_ms=MINUTE, track_offsets=True))
    return PartitionCore(0, base.timing, base.decider, base.config)


def records(events: list[dict[str, object]], first: int = 0) -> list[Record]:
    return [
        Record("cart", orjson.dumps(e), b"k", "t.cart", 0, first + i) for i, e in enumerate(events)
    ]


def test_records_read_again_after_a_restore_are_skipped_not_late() -> None:
    """A committed offset behind the checkpoint: what is read again is neither applied
    twice nor dead-lettered as late (the watermark has passed it)."""
    ev = EventMaker()
    c = live_core()
    log = records([ev.add(f"u{i}", T0 + i * 10 * MINUTE) for i in range(6)])
    c.step(log, now_ms=None)
    journeys = [(u, s) for u, s in c.take_dirty() if s is not None]
    checkpoint = c.take_watermark()
    assert checkpoint is not None
    again = live_core()
    again.restore(journeys)
    again.restore_watermark(checkpoint, None)
    out = again.step(log[2:], now_ms=None)  # from a committed offset of 2
    assert out.replayed == 4
    assert out.dead_letters == [] and out.held == []


def test_records_past_a_gap_are_held_and_the_gap_reported() -> None:
    ev = EventMaker()
    c = live_core()
    log = records([ev.add(f"u{i}", T0 + i * MINUTE) for i in range(8)])
    c.step(log[:3], now_ms=None)
    out = c.step(log[6:], now_ms=None)  # offsets 3-5 never arrived
    assert [r.offset for r in out.held] == [6, 7]
    assert c.progress.gaps == {"t.cart": 3}
    assert out.events_by_type == {}
    out = c.step(log[3:], now_ms=None)  # read again from 3
    assert out.held == [] and c.progress.gaps == {}
    assert out.events_by_type == {"cart_add": 5}


def test_a_gap_filled_in_the_same_batch_is_not_reported() -> None:
    ev = EventMaker()
    c = live_core()
    log = records([ev.add(f"u{i}", T0 + i * MINUTE) for i in range(5)])
    c.step(log[:1], now_ms=None)
    # fetched before a seek (3, 4), then read again from 1
    out = c.step([log[3], log[4], *log[1:]], now_ms=None)
    assert c.progress.gaps == {}
    assert [r.offset for r in out.held] == [3, 4]
    assert out.events_by_type == {"cart_add": 4}


def test_replay_keeps_no_offsets() -> None:
    ev = EventMaker()
    c = core()  # track_offsets off: files have no offsets worth keeping
    log = records([ev.add("u", T0), ev.add("v", T0 + HOUR)])
    c.step(log, now_ms=None)
    assert c.step(log, now_ms=None).replayed == 0
