"""Whether the brokers are answering this worker's fetches.

A consumer's high water marks are only as new as the last fetch response. While
the broker of a partition cannot be reached they stay where they were, so a
partition read up to them looks caught up when it is not: producers may be
holding records for it, or records may have been written that no response has
shown yet. The idle rule of the watermark (``stream/domain/watermark.py``) must
not take that for a quiet topic, so a partition counts as caught up only if a
fetch response for each of its input topics arrived within ``FRESH_MS``.

aiokafka records when each partition's last fetch response arrived
(``AIOKafkaConsumer.last_poll_timestamp``, a public method). Faust keeps its
aiokafka consumer on a consumer thread object; reaching it is the one faust
internal used here, checked against the faust version by a test.

The brokers count as unreachable when no fetch response, on an input partition or
on the budget ledger (read by its own consumer, assigned or not), came for
``OUTAGE_MS``. An outage is reported once when it starts and once when it ends
(log lines), and all the time by two gauges: ``goldenflow_broker_reachable`` and
``goldenflow_fetch_age_seconds``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from faust.types import TP

from stream.app.metrics import Metrics

log = logging.getLogger("goldenflow.broker")

#: A partition's fetch responses are older than this: not known to be caught up.
#: Faust long-polls with a 1.5 s fetch wait, so a live broker answers well within it.
FRESH_MS = 5_000
#: No fetch response on any assigned input partition for this long: an outage.
OUTAGE_MS = 6_000


def aiokafka_consumer(app: Any) -> Any | None:
    """The aiokafka consumer under faust's consumer, or None before it started."""
    thread = getattr(app.consumer, "_thread", None)
    return getattr(thread, "_consumer", None)


class FetchHealth:
    """Fetch-response freshness of the input partitions this worker is assigned."""

    def __init__(self, app: Any, topics: Iterable[str], metrics: Metrics) -> None:
        self.app = app
        self.topics = list(topics)
        self.metrics = metrics
        self.newest: int | None = None  # wall clock of the newest fetch response seen
        self.down_since: int | None = None  # wall clock of the last answer before an outage
        self.reachable = True
        # nothing known before the first fetch response: no outage to report (a worker
        # that cannot reach the brokers at start does not get ready: /ready says 503)
        metrics.broker_reachable.set(1)

    def last_fetch_ms(self, tp: TP) -> int | None:
        consumer = aiokafka_consumer(self.app)
        if consumer is None:
            return None
        try:
            stamp = consumer.last_poll_timestamp(tp)
        except (AssertionError, KeyError):  # not assigned (any more)
            return None
        return int(stamp) if stamp else None

    def fresh(self, tp: TP, now_ms: int) -> bool:
        last = self.last_fetch_ms(tp)
        return last is not None and now_ms - last <= FRESH_MS

    def update(self, partitions: Iterable[int], now_ms: int, also_ms: int | None = None) -> None:
        """Export the age of the newest fetch response over the assigned input
        partitions and ``also_ms`` (another consumer's, one that keeps fetching while
        no input partition is assigned, as during a rebalance), and log when the
        brokers stop or start answering."""
        stamps = [self.last_fetch_ms(TP(topic, p)) for p in partitions for topic in self.topics]
        seen = [s for s in [*stamps, also_ms] if s is not None]
        if seen and (self.newest is None or max(seen) > self.newest):
            self.newest = max(seen)
        if self.newest is None:
            return  # nothing fetched yet
        age = max(0, now_ms - self.newest)
        self.metrics.fetch_age.set(age / 1000)
        reachable = age <= OUTAGE_MS
        self.metrics.broker_reachable.set(1 if reachable else 0)
        if reachable == self.reachable:
            return
        self.reachable = reachable
        if not reachable:
            self.down_since = self.newest
            self.metrics.broker_outages.inc()
            log.error(
                "brokers unreachable: no fetch response for %.1f s; deadlines of quiet "
                "partitions wait until they answer again",
                age / 1000,
            )
        else:
            down = (now_ms - self.down_since) / 1000 if self.down_since is not None else 0.0
            log.warning("brokers answering again after %.1f s without a fetch response", down)
            self.down_since = None
