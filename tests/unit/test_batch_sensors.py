"""faust's sensors told once per batch end up exactly where its per-message calls leave
them: faust's own Monitor and Prometheus sensor, each with a fresh registry."""

from __future__ import annotations

from typing import Any

import pytest
from faust.sensors.base import Sensor
from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import TP
from faust.types.tuples import ConsumerMessage, Message
from prometheus_client import CollectorRegistry

from stream.app.batch_sensors import messages_in, messages_out


def fetch() -> list[Message]:
    """Messages of two topics and three partitions, offsets rising per partition."""
    spec = [("cart", 0, 4), ("cart", 0, 5), ("order", 2, 9), ("cart", 1, 0), ("cart", 0, 6)]
    return [
        ConsumerMessage(topic, partition, offset, 0.0, 0, None, b"k", b"{}", None)
        for topic, partition, offset in spec
    ]


class Clock:
    """A monitor's time source that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def prometheus(clock: Clock) -> tuple[PrometheusMonitor, CollectorRegistry]:
    registry = CollectorRegistry()
    return PrometheusMonitor(metrics=FaustMetrics.create(registry, "t"), time=clock), registry


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample but the creation times (which differ between two registries)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def state(monitor: Monitor) -> dict[str, Any]:
    return {
        "received": monitor.messages_received_total,
        "active": monitor.messages_active,
        "by_topic": dict(monitor.messages_received_by_topic),
        "read_offsets": dict(monitor.tp_read_offsets),
    }


def test_a_batch_leaves_the_prometheus_sensor_as_per_message_calls_would() -> None:
    clock = Clock()
    one_by_one, registry_a = prometheus(clock)
    batched, registry_b = prometheus(clock)
    a, b = fetch(), fetch()
    for message in a:
        one_by_one.on_message_in(message.tp, message.offset, message)
    messages_in([batched], b)
    assert state(batched) == state(one_by_one)
    assert state(batched)["received"] == 5
    assert state(batched)["read_offsets"][TP("cart", 0)] == 6
    assert [m.time_in for m in b] == [m.time_in for m in a] == [100.0] * 5
    clock.now = 100.25
    # The handler set one aside (never reported); the rest are acknowledged.
    for message in a[:4]:
        one_by_one.on_message_out(message.tp, message.offset, message)
    messages_out([batched], b[:4])
    assert state(batched) == state(one_by_one)
    assert state(batched)["active"] == 1
    assert [m.time_total for m in b[:4]] == [m.time_total for m in a[:4]] == [0.25] * 4
    assert samples(registry_b) == samples(registry_a)
    assert registry_b.get_sample_value("t_messages_received_total") == 5
    assert registry_b.get_sample_value("t_active_messages") == 1
    per_topic = registry_b.get_sample_value(
        "t_messages_received_per_topic_total", {"topic": "cart"}
    )
    assert per_topic == 4
    cart_0 = {"topic": "cart", "partition": "0"}
    assert registry_b.get_sample_value("t_messages_received_per_topics_partition", cart_0) == 6


class Recorder(Sensor):
    """A sensor of somebody else's: it must still hear of every message."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, TP, int]] = []

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        self.calls.append(("in", tp, offset))

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        self.calls.append(("out", tp, offset))


class RecordingMonitor(Monitor):
    """A subclass of faust's Monitor that adds per-message work (as faust's statsd and
    Datadog monitors do): it must still be called for every message."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, TP, int]] = []

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        super().on_message_in(tp, offset, message)
        self.calls.append(("in", tp, offset))

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        super().on_message_out(tp, offset, message)
        self.calls.append(("out", tp, offset))


@pytest.mark.parametrize("other", [Recorder, RecordingMonitor])
def test_other_sensors_still_get_one_call_per_message(other: type[Any]) -> None:
    recorder = other()
    monitor = Monitor()
    batch = fetch()
    messages_in([recorder, monitor], batch)
    messages_out([recorder, monitor], batch[1:])
    assert recorder.calls == [("in", m.tp, m.offset) for m in batch] + [
        ("out", m.tp, m.offset) for m in batch[1:]
    ]
    assert monitor.messages_received_total == 5
    assert monitor.messages_active == 1
    if isinstance(recorder, Monitor):
        assert state(recorder) == state(monitor)


def test_an_empty_batch_changes_nothing() -> None:
    monitor = Monitor()
    messages_in([monitor], [])
    messages_out([monitor], [])
    assert state(monitor) == state(Monitor())
