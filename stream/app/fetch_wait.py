"""How long the worker's consumer lets the brokers hold a fetch that has no records yet.

Apache Kafka answers a fetch as soon as records arrive, so the wait only bounds how
long an idle fetch is held, and faust's 1.5 s is harmless. The embedded broker
(Tansu) holds such a fetch for the whole wait, even when records arrive meanwhile:
with faust's 1.5 s an event can wait that long before the worker sees it (measured:
a cancel request's retention offer took 0.4-0.9 s at the median; a plain consumer
with a 500 ms wait saw records 127 ms late at the median, with 10 ms 4 ms).

``GOLDENFLOW_FETCH_WAIT_MS`` sets the wait. On the embedded profile it is 10 ms
unless set (``stream.config.EMBEDDED_FETCH_WAIT_MS``): with it, a cancel request's
retention offer went out 21 ms after the request at the median (87 ms at p99) under
1,000 ev/s, against 361 / 846 ms with faust's wait, at about the same throughput
(docs/performance.md). It became the default once the kill -9 and rebalance tests
passed with it, after the worker kept its input offsets with its state
(docs/reliability.md); before that an event replayed after a rebalance could fall
behind a watermark that had passed it. Tansu on S3 storage reads each fetch from
the object store and with a 10 ms wait its fetches come back empty: give it 1500
(the broker-outage test does). Other profiles keep faust's 1.5 s: Apache Kafka
answers a fetch as soon as records arrive.

faust builds the worker's aiokafka consumer in one method with the wait written in;
this wraps that method on one consumer instance (pinned to the faust version in
``stream.app.embedded.FAUST_VERSION``, checked by ``tests/unit/test_faust_pins.py``).
"""

from __future__ import annotations

from typing import Any


def set_fetch_wait(app: Any, wait_ms: int) -> None:
    """Make the worker's consumer let a fetch wait at most ``wait_ms``."""
    thread = app.consumer._thread
    create = thread._create_worker_consumer

    def create_consumer(*args: Any, **kwargs: Any) -> Any:
        consumer = create(*args, **kwargs)
        consumer._fetch_max_wait_ms = wait_ms  # read by the fetcher the consumer starts
        return consumer

    thread._create_worker_consumer = create_consumer
