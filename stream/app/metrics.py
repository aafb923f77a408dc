"""Every goldenflow metric, in one place.

Names follow Prometheus conventions: ``goldenflow_`` prefix, ``_total`` for
counters, base units; labels are bounded (topic, type, pattern, reason, rule),
never user, sku or order ids. Metrics are updated once per batch from the core's
counters, not per event. Pass a fresh ``CollectorRegistry`` in tests.
"""

from __future__ import annotations

import collections

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.domain.engine import StepOutput

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


#: decision results that are not suppressions
NOT_SUPPRESSED = frozenset({"emitted", "deferred", "no_rule"})


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_consumed = Counter(
            "goldenflow_events_consumed_total",
            "Valid input events processed, by topic kind and event type.",
            ["topic", "type"],
            registry=registry,
        )
        self.invalid_events = Counter(
            "goldenflow_invalid_events_total",
            "Input messages rejected, by reason code (late events count here as 'late').",
            ["reason"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "goldenflow_dead_letters_total",
            "Records written to the dead-letter topic.",
            registry=registry,
        )
        self.patterns = Counter(
            "goldenflow_patterns_detected_total",
            "Patterns detected (facts), by pattern.",
            ["pattern"],
            registry=registry,
        )
        self.commands = Counter(
            "goldenflow_commands_emitted_total",
            "Intervention commands published, by pattern, type and channel.",
            ["pattern", "type", "channel"],
            registry=registry,
        )
        self.pending_deadlines = Gauge(
            "goldenflow_pending_deadlines",
            "Deadlines armed and not yet fired, on this worker.",
            registry=registry,
        )
        self.journeys = Gauge(
            "goldenflow_journeys",
            "Shopper journeys held in state on this worker.",
            registry=registry,
        )
        self.ruleset_info = Gauge(
            "goldenflow_ruleset_info",
            "The rule set version in force (value 1).",
            ["version"],
            registry=registry,
        )
        self.duplicate_events = Counter(
            "goldenflow_duplicate_events_total",
            "Input events ignored as repeats of an event_id already seen within the horizon.",
            registry=registry,
        )
        self.decisions = Counter(
            "goldenflow_decisions_total",
            "Decisions made about detected patterns, by pattern, rule and result.",
            ["pattern", "rule", "result"],
            registry=registry,
        )
        self.suppressions = Counter(
            "goldenflow_suppressions_total",
            "Decisions not emitted as commands, by reason (cap, budget, holdout, ...).",
            ["reason"],
            registry=registry,
        )
        self.budget_spend = Counter(
            "goldenflow_budget_spend_total",
            "Value committed by emitted commands, by budget bucket and unit (currency, points).",
            ["bucket", "unit"],
            registry=registry,
        )
        self.budget_remaining = Gauge(
            "goldenflow_budget_remaining",
            "Budget left today in this worker's view, by bucket and unit.",
            ["bucket", "unit"],
            registry=registry,
        )
        self.recovered_orders = Counter(
            "goldenflow_recovered_orders_total",
            "Conversions attributed to a decision, by pattern and arm (treatment, control).",
            ["pattern", "arm"],
            registry=registry,
        )
        self.recovered_gmv = Counter(
            "goldenflow_recovered_gmv_total",
            "GMV of conversions attributed to a decision, by pattern and arm.",
            ["pattern", "arm"],
            registry=registry,
        )
        self.rule_reload_failures = Counter(
            "goldenflow_rule_reload_failures_total",
            "Rule-file changes refused because they did not validate.",
            registry=registry,
        )
        self.deadline_to_command = Histogram(
            "goldenflow_deadline_to_command_seconds",
            "From a deadline becoming due (watermark passing it) to its command being published.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.cancel_to_retention = Histogram(
            "goldenflow_cancel_to_retention_seconds",
            "From a cancel request arriving to its retention command being published.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "goldenflow_consumer_lag_messages",
            "Messages up to the partition's high water (from fetch responses) its state has not "
            "taken in yet.",
            ["topic", "partition"],
            registry=registry,
        )
        self.watermark = Gauge(
            "goldenflow_watermark_seconds",
            "Event-time watermark of each input partition this worker holds (Unix time).",
            ["partition"],
            registry=registry,
        )
        self.broker_reachable = Gauge(
            "goldenflow_broker_reachable",
            "1 while a fetch response for an assigned input partition arrived within 6 s.",
            registry=registry,
        )
        self.fetch_age = Gauge(
            "goldenflow_fetch_age_seconds",
            "Seconds since the newest fetch response on this worker's input partitions.",
            registry=registry,
        )
        self.broker_outages = Counter(
            "goldenflow_broker_outages_total",
            "Times the brokers stopped answering this worker's fetches for over 6 s.",
            registry=registry,
        )
        self.stale_events = Counter(
            "goldenflow_stale_events_total",
            "Events fetched before a rebalance and handed over after it: left unprocessed "
            "and unacknowledged (the partition's owner reads them from its committed offset).",
            registry=registry,
        )
        self.replayed_events = Counter(
            "goldenflow_replayed_events_total",
            "Input records at offsets the partition's checkpointed state has taken in "
            "already (read again from a committed offset behind it): skipped.",
            registry=registry,
        )
        self.rereads = Counter(
            "goldenflow_rereads_total",
            "Seeks back to the next offset the state expects, after records past a gap "
            "in a topic partition's offsets arrived (held back, read again).",
            registry=registry,
        )
        self.offset_gaps = Counter(
            "goldenflow_offset_gaps_skipped_total",
            "Gaps in a topic partition's offsets still there after reading again "
            "(transaction markers, retention, compaction): moved past.",
            registry=registry,
        )
        self.batch_size = Histogram(
            "goldenflow_batch_events",
            "Events handed to the core per batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=registry,
        )
        self.event_to_command = Histogram(
            "goldenflow_event_to_command_seconds",
            "Event time of the fact to the command being published (includes dwell).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def record_step(self, out: StepOutput, kinds: dict[str, str]) -> None:
        """Update counters from one batch's output. ``kinds`` maps type -> topic kind."""
        for type_, n in out.events_by_type.items():
            self.events_consumed.labels(kinds.get(type_, "unknown"), type_).inc(n)
        for dl in out.dead_letters:
            self.invalid_events.labels(dl.code).inc()
        if out.dead_letters:
            self.dead_letters.inc(len(out.dead_letters))
        # counted per label set first: one child lookup per set and batch, not per fact
        for pattern, n in collections.Counter(fact.pattern for fact in out.facts).items():
            self.patterns.labels(pattern).inc(n)
        suppressed: collections.Counter[str] = collections.Counter()
        for (pattern, rule, result), n in collections.Counter(out.decisions).items():
            self.decisions.labels(pattern, rule or "none", result).inc(n)
            if result not in NOT_SUPPRESSED:
                suppressed[result] += n
        for result, n in suppressed.items():
            self.suppressions.labels(result).inc(n)
        for rec in out.outcomes:
            if rec["kind"] == "decision":
                if rec["arm"] == "treatment" and rec["cost"] and rec["bucket"]:
                    self.budget_spend.labels(rec["bucket"], rec["unit"]).inc(rec["cost"])
            elif rec["result"] == "converted":
                self.recovered_orders.labels(rec["pattern"], rec["arm"]).inc()
                self.recovered_gmv.labels(rec["pattern"], rec["arm"]).inc(rec["gmv"])
        sent = collections.Counter(
            (cmd["pattern"], cmd["intervention"]["type"], cmd["intervention"]["channel"])
            for cmd in out.commands
        )
        for (pattern, type_, channel), n in sent.items():
            self.commands.labels(pattern, type_, channel).inc(n)
