"""A deadline index: which journey needs attention at which event time.

One heap per partition with lazy invalidation: each user has at most one live
entry (its journey's ``notify_at``); rescheduling pushes a new entry and the old
one is skipped when popped. Finding due work never scans all state.
"""

from __future__ import annotations

import heapq


class DeadlineIndex:
    __slots__ = ("_heap", "_scheduled")

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._scheduled: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._scheduled)

    def schedule(self, user_id: str, due_ms: int | None) -> None:
        """Set (or clear, with ``None``) the user's next deadline."""
        current = self._scheduled.get(user_id)
        if due_ms == current:
            return
        if due_ms is None:
            del self._scheduled[user_id]
            return
        self._scheduled[user_id] = due_ms
        heapq.heappush(self._heap, (due_ms, user_id))
        if len(self._heap) > 2 * len(self._scheduled) + 64:
            self._compact()

    def next_due(self) -> int | None:
        heap = self._heap
        while heap:
            due, user = heap[0]
            if self._scheduled.get(user) == due:
                return due
            heapq.heappop(heap)
        return None

    def pop_due(self, watermark_ms: int) -> list[str]:
        """Remove and return the users whose deadline is at or before the watermark."""
        heap, scheduled = self._heap, self._scheduled
        users: list[str] = []
        while heap and heap[0][0] <= watermark_ms:
            due, user = heapq.heappop(heap)
            if scheduled.get(user) == due:
                del scheduled[user]
                users.append(user)
        return users

    def _compact(self) -> None:
        self._heap = [(due, user) for user, due in self._scheduled.items()]
        heapq.heapify(self._heap)
