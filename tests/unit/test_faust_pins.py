"""Guards for the places goldenflow relies on faust's internals (pinned version)."""

from __future__ import annotations

import inspect
from importlib.metadata import version

from aiokafka import AIOKafkaConsumer
from faust.sensors.base import SensorDelegate
from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import PrometheusMonitor
from faust.streams import Stream
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer, Fetcher
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Producer as FaustProducer
from faust.types.tuples import Message

from stream.app.embedded import FAUST_VERSION


def test_faust_is_the_version_the_embedded_recovery_fix_was_checked_against() -> None:
    assert version("faust-streaming") == FAUST_VERSION, (
        "faust-streaming changed: re-check stream/app/embedded.py against its table "
        "recovery, then update FAUST_VERSION"
    )


def test_table_recovery_still_asks_the_consumer_for_changelog_end_offsets() -> None:
    source = inspect.getsource(Recovery._build_highwaters)
    assert "consumer.highwaters(" in source


def test_old_generation_events_are_left_unacknowledged_the_way_faust_expects() -> None:
    """stream/app/stale_events.py: an event marked acked is never reported to the
    consumer, the consumer's unacked set drops it, and take_events acks its batch
    after the handler returns."""
    assert "if not self.acked:" in inspect.getsource(Message.ack)
    assert "message.acked" in inspect.getsource(Consumer._clean_unacked_messages)
    assert "await self.ack(event)" in inspect.getsource(Stream.take_events)
    assert "message.generation_id != self.app.consumer_generation_id" in inspect.getsource(
        Stream._py_aiter
    )


def test_faust_sends_through_the_aiokafka_producer_the_publisher_batches_into() -> None:
    """stream/app/publisher.py hands batches to the producer faust itself sends with."""
    assert "return self._producer" in inspect.getsource(FaustProducer._ensure_producer)
    assert "self._ensure_producer()" in inspect.getsource(FaustProducer.send)


def test_the_worker_consumer_is_built_by_a_method_whose_fetch_wait_can_be_shortened() -> None:
    """stream/app/fetch_wait.py set_fetch_wait: faust builds the worker's aiokafka
    consumer in _create_worker_consumer, whose fetch wait the consumer's start reads."""
    assert "self._create_worker_consumer(" in inspect.getsource(
        AIOKafkaConsumerThread._create_consumer
    )
    assert "fetch_max_wait_ms=1500" in inspect.getsource(
        AIOKafkaConsumerThread._create_worker_consumer
    )
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)


def test_the_drain_loop_the_batch_drain_replaces_is_the_one_it_copies() -> None:
    """stream/app/drain.py: faust's fetcher runs the consumer's _drain_messages, whose
    read-offset, gap, flow-control and commit handling the batch drain repeats."""
    assert "await consumer._drain_messages(self)" in inspect.getsource(Fetcher._fetcher.fun)
    loop = inspect.getsource(Consumer._drain_messages)
    for piece in (
        "getmany(timeout=1.0)",
        "if r_offset is None or offset >= r_offset:",
        "if gap > 1 and r_offset:",
        "await self._add_gap(tp, r_offset + 1, offset)",
        "if self._n_acked >= commit_every:",
        "callback(message), self.suspend_flow.wait()",
        "set_read_offset(tp, offset)",
    ):
        assert piece in loop, piece
    getmany = inspect.getsource(Consumer.getmany)
    assert "if not self.flow_active:" in getmany
    assert "if new_generation_id != generation_id:" in getmany
    assert "tp in active_partitions" in getmany
    track = inspect.getsource(Consumer.track_message)
    assert "self._unacked_messages.add(message)" in track
    assert "self._on_message_in(message.tp, message.offset, message)" in track
    assert "if not message.acked:" in inspect.getsource(Consumer.ack)


def test_the_sensor_calls_the_batch_drain_makes_per_batch_are_the_ones_it_repeats() -> None:
    """stream/app/batch_sensors.py does per batch what faust's Monitor and Prometheus
    sensor do per message: exactly these updates."""
    monitor_in = inspect.getsource(Monitor.on_message_in)
    for piece in (
        "self.messages_received_total += 1",
        "self.messages_active += 1",
        "self.messages_received_by_topic[tp.topic] += 1",
        "self.tp_read_offsets[tp] = offset",
        "message.time_in = self.time()",
    ):
        assert piece in monitor_in, piece
    assert monitor_in.count("\n        self.") + monitor_in.count("\n        message.") == 5
    prometheus_in = inspect.getsource(PrometheusMonitor.on_message_in)
    for piece in (
        "super().on_message_in(tp, offset, message)",
        "self._metrics.messages_received.inc()",
        "self._metrics.active_messages.inc()",
        "self._metrics.messages_received_per_topics.labels(topic=tp.topic).inc()",
        "self._metrics.messages_received_per_topics_partition.labels(",
    ):
        assert piece in prometheus_in, piece
    assert prometheus_in.count("self._metrics.") == 4
    monitor_out = inspect.getsource(Monitor.on_message_out)
    assert "self.messages_active -= 1" in monitor_out
    assert "time_out = message.time_out = self.time()" in monitor_out
    assert "message.time_total = time_out - time_in" in monitor_out
    assert monitor_out.count("self.") == 2  # messages_active, time
    prometheus_out = inspect.getsource(PrometheusMonitor.on_message_out)
    assert "super().on_message_out(tp, offset, message)" in prometheus_out
    assert "self._metrics.active_messages.dec()" in prometheus_out
    assert prometheus_out.count("self._metrics.") == 1
    assert "return iter(self._sensors)" in inspect.getsource(SensorDelegate.__iter__)
