"""Fetch freshness: what makes a partition count as caught up, and the outage signals."""

from __future__ import annotations

import inspect
import logging
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer
from faust.transport.consumer import ThreadDelegateConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from prometheus_client import CollectorRegistry

from stream.app.fetch_health import FRESH_MS, OUTAGE_MS, FetchHealth, aiokafka_consumer
from stream.app.metrics import Metrics

NOW = 1_800_000_000_000


class Polled:
    """An aiokafka consumer as far as FetchHealth reads it: last fetch response times."""

    def __init__(self, stamps: dict[TP, int]) -> None:
        self.stamps = stamps

    def last_poll_timestamp(self, tp: TP) -> int | None:
        if tp not in self.stamps:
            raise AssertionError("Partition is not assigned")
        return self.stamps[tp]


def health(stamps: dict[TP, int]) -> tuple[FetchHealth, CollectorRegistry]:
    registry = CollectorRegistry()
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=None)))
    app.consumer._thread._consumer = Polled(stamps)
    return FetchHealth(app, ["cart", "order"], Metrics(registry)), registry


def test_the_aiokafka_consumer_is_where_faust_keeps_it() -> None:
    """The one faust internal this relies on (faust-streaming 0.15.3)."""
    assert "self._thread = " in inspect.getsource(ThreadDelegateConsumer.__init__)
    assert "self._consumer = " in inspect.getsource(AIOKafkaConsumerThread.on_start)
    assert "last_poll_timestamp" in dir(AIOKafkaConsumer)
    assert aiokafka_consumer(SimpleNamespace(consumer=object())) is None  # not started


def test_a_partition_is_fresh_only_with_a_recent_fetch_response() -> None:
    h, _ = health({TP("cart", 0): NOW - FRESH_MS, TP("order", 0): NOW - FRESH_MS - 1})
    assert h.fresh(TP("cart", 0), NOW)
    assert not h.fresh(TP("order", 0), NOW)  # stale: its high water is not trusted
    assert not h.fresh(TP("cart", 1), NOW)  # not assigned
    h.app.consumer._thread._consumer = None
    assert not h.fresh(TP("cart", 0), NOW)  # consumer not started


def test_an_outage_is_counted_logged_once_and_its_end_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stamps = {TP("cart", 0): NOW, TP("order", 0): NOW - 3_000}
    h, registry = health(stamps)
    h.update([0], NOW + 2_000)
    assert registry.get_sample_value("goldenflow_broker_reachable") == 1
    assert registry.get_sample_value("goldenflow_fetch_age_seconds") == 2.0
    with caplog.at_level(logging.WARNING, logger="goldenflow.broker"):
        for t in range(OUTAGE_MS + 1_000, OUTAGE_MS + 30_000, 500):
            h.update([0], NOW + t)
        assert registry.get_sample_value("goldenflow_broker_reachable") == 0
        assert registry.get_sample_value("goldenflow_broker_outages_total") == 1
        stamps[TP("cart", 0)] = NOW + 40_000
        h.update([0], NOW + 40_100)
    assert registry.get_sample_value("goldenflow_broker_reachable") == 1
    assert registry.get_sample_value("goldenflow_fetch_age_seconds") == pytest.approx(0.1)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("brokers unreachable: no fetch response for 7.0 s;")
    assert messages[1] == "brokers answering again after 40.1 s without a fetch response"


def test_nothing_assigned_says_nothing() -> None:
    h, registry = health({})
    h.update([], NOW)
    assert registry.get_sample_value("goldenflow_broker_outages_total") == 0
    assert registry.get_sample_value("goldenflow_fetch_age_seconds") == 0  # never set
    assert h.reachable


def test_with_no_partition_assigned_the_ledger_consumer_tells_about_the_brokers() -> None:
    """During a rebalance a worker holds no input partition; an outage then must still
    show, from the ledger consumer's fetches."""
    h, registry = health({})
    h.update([], NOW, also_ms=NOW - 100)
    assert registry.get_sample_value("goldenflow_broker_reachable") == 1
    h.update([], NOW + OUTAGE_MS, also_ms=NOW - 100)
    assert registry.get_sample_value("goldenflow_broker_reachable") == 0
    assert registry.get_sample_value("goldenflow_fetch_age_seconds") == (OUTAGE_MS + 100) / 1000
