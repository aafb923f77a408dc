from __future__ import annotations

from stream.domain.deadlines import DeadlineIndex


def test_pops_due_users_in_time_order_and_skips_rescheduled_entries() -> None:
    idx = DeadlineIndex()
    idx.schedule("a", 30)
    idx.schedule("b", 10)
    idx.schedule("c", 20)
    idx.schedule("a", 5)  # moved earlier: the old entry at 30 must not fire again
    idx.schedule("c", None)  # cancelled
    assert idx.next_due() == 5
    assert idx.pop_due(15) == ["a", "b"]
    assert idx.pop_due(100) == []
    assert len(idx) == 0


def test_heap_stays_bounded_under_many_reschedules() -> None:
    idx = DeadlineIndex()
    for t in range(10_000):
        idx.schedule("same-user", t)
    assert len(idx._heap) < 200
    assert idx.pop_due(10_000) == ["same-user"]
