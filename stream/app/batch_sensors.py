"""faust's per-message sensor calls, made once per batch of input messages.

faust tells each of its sensors about every message taken in
(``on_message_in``) and every message acknowledged (``on_message_out``). Its
Prometheus sensor answers each with two label look-ups and four metric updates:
about 4% of a worker's time on the benchmark traffic, spent on counters. The
batch drain (``stream/app/drain.py``) takes whole fetches, so it tells the
sensors once per batch here, leaving every figure as the per-message calls
would: the same counters, gauges and read offsets. The messages' ``time_in`` is
the time the batch was taken (faust stamped each record as it read it, a fetch's
records microseconds apart) and ``time_out`` the time it was acknowledged; nothing
in faust or goldenflow reads either for these two sensors.

That holds for faust's own ``Monitor`` and ``PrometheusMonitor``, exactly those
types (pinned to the faust version by ``tests/unit/test_faust_pins.py``). Any
other sensor, their subclasses included (faust's statsd and Datadog monitors add
work of their own), still gets one call per message, once the fetch is taken.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import attrgetter
from typing import Any

from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import PrometheusMonitor

#: Sensors whose per-message work is done here per batch (exactly these types: a
#: subclass may add its own per-message work).
_KNOWN = (Monitor, PrometheusMonitor)


def messages_in(sensors: Iterable[Any], batch: Sequence[Any]) -> None:
    """What ``on_message_in(tp, offset, message)`` does for each message of ``batch``."""
    if not batch:
        return
    last: dict[Any, int] = {}
    per_topic: Counter[str] = Counter()
    for message in batch:
        last[message.tp] = message.offset
        per_topic[message.topic] += 1
    n = len(batch)
    for sensor in _batched(sensors, batch, attrgetter("on_message_in")):
        sensor.messages_received_total += n
        sensor.messages_active += n
        for topic, count in per_topic.items():
            sensor.messages_received_by_topic[topic] += count
        sensor.tp_read_offsets.update(last)
        now = sensor.time()
        for message in batch:
            message.time_in = now
        if type(sensor) is PrometheusMonitor:
            metrics = sensor._metrics
            metrics.messages_received.inc(n)
            metrics.active_messages.inc(n)
            for topic, count in per_topic.items():
                metrics.messages_received_per_topics.labels(topic=topic).inc(count)
            by_partition = metrics.messages_received_per_topics_partition
            for tp, offset in last.items():
                by_partition.labels(topic=tp.topic, partition=tp.partition).set(offset)


def messages_out(sensors: Iterable[Any], batch: Sequence[Any]) -> None:
    """What ``on_message_out(tp, offset, message)`` does for each message of ``batch``."""
    if not batch:
        return
    n = len(batch)
    for sensor in _batched(sensors, batch, attrgetter("on_message_out")):
        sensor.messages_active -= n
        now = sensor.time()
        for message in batch:
            message.time_out = now
            if message.time_in is not None:
                message.time_total = now - message.time_in
        if type(sensor) is PrometheusMonitor:
            sensor._metrics.active_messages.dec(n)


def _batched(
    sensors: Iterable[Any], batch: Sequence[Any], per_message: Callable[[Any], Any]
) -> Iterator[Any]:
    """The sensors whose per-message work is done here per batch; every other sensor
    gets its per-message call (``per_message(sensor)``) for each message, now."""
    for sensor in sensors:
        if type(sensor) in _KNOWN:
            yield sensor
            continue
        call = per_message(sensor)
        for message in batch:
            call(message.tp, message.offset, message)
