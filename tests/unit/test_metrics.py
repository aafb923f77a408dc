from __future__ import annotations

from prometheus_client import CollectorRegistry

from stream.app.metrics import Metrics
from stream.app.worker import TYPE_KIND
from stream.domain.engine import CoreConfig
from stream.domain.timeutil import HOUR
from tests.helpers import T0, EventMaker, core, rec


def test_a_batch_updates_counters_with_bounded_labels() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    ev, c = EventMaker(), core(CoreConfig(lateness_ms=0))
    out = c.step(
        [
            rec(ev.add("a", T0)),
            rec(ev.add("b", T0)),
            rec(b"nope"),
            rec(ev("cart_view", "x", T0 + HOUR)),
        ],
        now_ms=None,
    )
    metrics.record_step(out, TYPE_KIND)
    get = registry.get_sample_value
    assert get("goldenflow_events_consumed_total", {"topic": "cart", "type": "cart_add"}) == 2
    assert get("goldenflow_invalid_events_total", {"reason": "not_json"}) == 1
    assert get("goldenflow_dead_letters_total") == 1
    assert get("goldenflow_patterns_detected_total", {"pattern": "cart_stall"}) == 2
    labels = {"pattern": "cart_stall", "type": "category_coupon", "channel": "push"}
    assert get("goldenflow_commands_emitted_total", labels) == 2
    rule = "cart_stall.fresh_food.coupon"
    decided = {"pattern": "cart_stall", "rule": rule, "result": "emitted"}
    assert get("goldenflow_decisions_total", decided) == 2
    for metric in registry.collect():
        for sample in metric.samples:
            assert "a" not in sample.labels.values()  # never a user id
