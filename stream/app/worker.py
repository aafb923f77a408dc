"""The Faust worker: an adapter that feeds batches to the core and publishes the results.

The consumer's drain loop hands each fetch of the four input topics to the
pipeline whole (``stream/app/drain.py``; with ``drain=stream`` one agent takes
them through faust's ``take_events`` instead), and each batch is split by
partition and stepped through that partition's
:class:`~stream.domain.engine.PartitionCore`. Commands and dead
letters of a batch are produced together and awaited before the batch is
acknowledged (at-least-once); the journeys the batch touched are written once
each to the changelog-backed table. A timer lets idle partitions' watermarks
follow the wall clock so deadlines fire when traffic stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import faust
from aiohttp import web
from aiokafka.errors import KafkaError
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.types import TP
from prometheus_client import CollectorRegistry

from stream.app.drain import finish_even_if_cancelled, use_batch_drain
from stream.app.embedded import use_fetch_highwaters
from stream.app.fetch_health import FetchHealth
from stream.app.fetch_wait import set_fetch_wait
from stream.app.ledger import LedgerReader, claim_key, encode_claim, ledger_topic
from stream.app.metrics import Metrics
from stream.app.publisher import Batches, producer_of
from stream.app.recovery_wait import wait_out_outages
from stream.app.rereads import Rereads, held_messages
from stream.app.stale_events import set_aside, split_current
from stream.app.topics import changelog_topic, key_partition
from stream.config import Settings
from stream.decide.rulebook import RuleBook, load_rulebook, rules_fingerprint
from stream.domain.budget import Claim, LedgerFold, budget_day, read_back
from stream.domain.engine import CoreConfig, DeadLetter, PartitionCore, Record, StepOutput
from stream.domain.events import TYPE_KIND, encode
from stream.errors import RuleFileError

log = logging.getLogger("goldenflow.worker")

#: Table keys of per-partition watermarks: not UTF-8, so no user id can collide.
WATERMARK_KEY = b"\xffwatermark/"


#: Caught-up readings older than this when the tick gets the lock are not used.
CAUGHT_UP_MAX_AGE_MS = 1_000


def watermark_key(partition: int) -> bytes:
    return WATERMARK_KEY + str(partition).encode()


def wall_ms() -> int:
    return int(time.time() * 1000)


def faust_options(settings: Settings) -> dict[str, Any]:
    """Faust settings derived from ours (connection, group timing, web, state)."""
    opts: dict[str, Any] = {
        "broker": settings.broker_url,
        "value_serializer": "raw",
        "key_serializer": "raw",
        "store": "memory://",
        "datadir": str(settings.data_dir),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "consumer_auto_offset_reset": "earliest",
        "table_standby_replicas": settings.standby_replicas,
        "producer_linger": 0.0,
        # a fetch handed over whole is at most one batch: no burst of message objects
        "broker_max_poll_records": settings.batch_max,
        "web_enabled": True,
        "web_host": settings.web_host,
        "web_bind": settings.web_host,
        "web_port": settings.web_port,
        "web_in_thread": False,
    }
    creds = _credentials(settings)
    if creds is not None:
        opts["broker_credentials"] = creds
    if settings.profile == "embedded":
        # Short group timings: the embedded broker holds a JoinGroup for about half
        # the session timeout, and tests and the demo should not wait 30 s.
        opts.update(
            broker_session_timeout=6.0,
            broker_heartbeat_interval=1.0,
            broker_rebalance_timeout=10.0,
            broker_commit_interval=1.0,
        )
    return opts


def _credentials(settings: Settings) -> Any:
    proto = settings.security_protocol
    if proto == "PLAINTEXT":
        return None
    ctx = settings.kafka_client_options().get("ssl_context")
    if proto == "SSL":
        return faust.SSLCredentials(ctx)
    password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=password,
        ssl_context=ctx,
        mechanism=settings.sasl_mechanism,
    )


class Pipeline:
    """Owns the partition cores of this worker and publishes their outputs."""

    def __init__(
        self, app: faust.App, settings: Settings, rulebook: RuleBook, metrics: Metrics, table: Any
    ) -> None:
        self.app = app
        self.settings = settings
        self.rulebook = rulebook
        self.metrics = metrics
        self.table = table
        self.kinds = settings.input_topics
        self.cores: dict[int, PartitionCore] = {}
        self.core_config = CoreConfig(
            lateness_ms=settings.lateness_ms,
            idle_ms=settings.idle_ms,
            max_future_ms=settings.max_future_ms,
            horizon_ms=settings.horizon_ms,
            sources=tuple(settings.input_topics.values()),
            partitions=settings.partitions,
            origin=uuid.uuid4().hex[:12],
            track_offsets=True,
        )
        self.lock = asyncio.Lock()
        self.interventions = settings.topic("interventions")
        self.changelog = changelog_topic(settings)
        self._redeliver: list[tuple[str, dict[str, Any]]] = []
        self.outcomes = settings.topic("outcomes")
        self.ledger_topic = ledger_topic(settings)
        self.guardrails = rulebook.guardrails
        self.ledger = self._fold([])
        self._budget_day: int | None = None
        self._retry: set[int] = set()  # partitions whose parked facts can be decided again
        self.rereads = Rereads(app, metrics)
        self.ready = False  # set once the first assignment's state is recovered
        self.dlq = settings.topic("dlq")
        self.fetch_health = FetchHealth(app, self.kinds, metrics)
        metrics.ruleset_info.labels(rulebook.version).set(1)
        self._rules_seen = rules_fingerprint(settings.rules_dir)

    # -- budget ledger -----------------------------------------------------------------

    def _fold(self, claims: list[Claim]) -> LedgerFold:
        g = self.guardrails
        fold = LedgerFold(g.buckets, self.settings.partitions, g.slice_share)
        for claim in claims:
            fold.apply(claim)
        return fold

    def on_claim(self, claim: Claim) -> None:
        """A claim read back from the ledger: fold it; settle it if it is ours (see
        :func:`~stream.domain.budget.read_back`)."""
        core = self.cores.get(claim.partition)
        budget = core.budget if core is not None else None
        if read_back(self.ledger, budget, claim) and core is not None and core.parked:
            self._retry.add(claim.partition)
        self._export_budget()

    async def after_ledger(self) -> None:
        """Decide again what waited for the claims just read.

        While batches flow, the next one does it first thing, inside its own checkpoint
        and publish (a round of its own here held the lock for two more round trips,
        several times a second under load); only a worker with no batch under way runs
        a round here, and otherwise the timer does it within half a second if no
        batch comes."""
        if not self._retry or self.lock.locked():
            return
        async with self.lock:
            now = wall_ms()
            out = StepOutput()
            self._retry_parked(out, now)
            await self._publish(out, now)

    def _retry_parked(self, out: StepOutput, now: int) -> None:
        partitions, self._retry = self._retry, set()
        for partition in sorted(partitions):
            core = self.cores.get(partition)
            if core is not None:
                out.extend(core.retry_parked(now_ms=now))

    def _export_budget(self, day: int | None = None) -> None:
        """Remaining budget of the latest day seen: what this worker's partitions hold
        plus what the pool can still grant (the pool is the same on every worker)."""
        if day is not None:
            self._budget_day = max(self._budget_day or day, day)
        elif self.ledger.latest_day is not None:
            self._budget_day = max(self._budget_day or 0, self.ledger.latest_day)
        day = self._budget_day
        if day is None:
            return
        for name, bucket in self.guardrails.buckets.items():
            for unit in bucket.daily:
                held = sum(c.budget.remaining(name, unit, day) for c in self.cores.values())
                pool = self.ledger.pool(name, unit, day)
                self.metrics.budget_remaining.labels(name, unit).set(held + pool)

    # -- partitions ------------------------------------------------------------------

    def core(self, partition: int) -> PartitionCore:
        core = self.cores.get(partition)
        if core is None:
            self.assign({partition})
            core = self.cores[partition]
        return core

    def assign(self, partitions: set[int]) -> None:
        """Build the cores of newly assigned partitions from the recovered table."""
        new = partitions - set(self.cores)
        if not new:
            return
        snapshots: dict[int, list[tuple[str, bytes]]] = {p: [] for p in new}
        n = self.settings.partitions
        for key, value in self.table.items():
            if value is not None and not key.startswith(WATERMARK_KEY):
                partition = key_partition(key, n)
                if partition in snapshots:
                    snapshots[partition].append((key.decode(), value))
        now = wall_ms()
        for partition in sorted(new):
            core = PartitionCore(
                partition,
                self.rulebook.timing,
                self.rulebook.decider,
                self.core_config,
                now_ms=now,
                guardrails=self.guardrails,
                ledger=self.ledger,
            )
            watermark = self.table.data.get(watermark_key(partition))
            if watermark is not None:
                core.restore_watermark(watermark, now)
            undelivered = core.restore(snapshots[partition])
            self._redeliver.extend(undelivered)
            self.cores[partition] = core
            log.info(
                "partition %d: restored %d journeys, %d deadlines, %d commands to redeliver",
                partition,
                len(core.journeys),
                core.pending_deadlines,
                len(undelivered),
            )

    async def reload_rules(self) -> None:
        """Swap in changed rule files between batches; refuse broken ones, keep deciding.

        Deadlines already armed keep their due times; new timing applies to what is
        armed from now on.
        """
        seen = rules_fingerprint(self.settings.rules_dir)
        if seen == self._rules_seen:
            return
        self._rules_seen = seen
        try:
            book = load_rulebook(self.settings.rules_dir)
        except RuleFileError as exc:
            self.metrics.rule_reload_failures.inc()
            log.error(
                "rule change refused, still deciding with rules %s:\n%s",
                self.rulebook.version,
                "\n".join(str(p) for p in exc.problems),
            )
            return
        if book.version == self.rulebook.version:
            return
        async with self.lock:
            old = self.rulebook.version
            self.rulebook = book
            self.guardrails = book.guardrails
            self.ledger = self._fold(self.ledger.claims)  # budgets may have changed
            for core in self.cores.values():
                core.timing = book.timing
                core.decider = book.decider
                core.guardrails = book.guardrails
                core.budget.ledger = self.ledger
            self.metrics.ruleset_info.clear()
            self.metrics.ruleset_info.labels(book.version).set(1)
        log.info("rules %s replaced %s (%d rules)", book.version, old, len(book.decider.rules))

    def revoke(self, partitions: set[int]) -> None:
        for p in partitions:
            if self.cores.pop(p, None) is not None:
                with contextlib.suppress(KeyError):  # never set: no watermark yet
                    self.metrics.watermark.remove(str(p))
        self.rereads.forget(partitions)

    # -- batches -----------------------------------------------------------------------

    async def handle(self, messages: list[Any]) -> None:
        """Step a batch of fetched input messages (faust ``Message``s) and publish what
        it gives; messages this leaves unacknowledged are marked acked (set aside)."""
        async with self.lock:
            # Under the lock: a rebalance (which takes it too) may have ended the
            # generation these messages were fetched in while this batch waited.
            consumer = self.app.consumer
            messages, stale = split_current(
                messages, self.app.consumer_generation_id, consumer.assignment()
            )
            if stale:
                set_aside(stale)
                self.metrics.stale_events.inc(len(stale))
                log.info("set aside %d events fetched before the last rebalance", len(stale))
            if not messages:
                return
            by_partition: dict[int, list[Record]] = defaultdict(list)
            kinds = self.kinds
            for msg in messages:
                value = msg.value if isinstance(msg.value, bytes) else b""
                stamp = msg.timestamp
                by_partition[msg.partition].append(
                    Record(
                        kinds.get(msg.topic),
                        value,
                        msg.key,
                        msg.topic,
                        msg.partition,
                        msg.offset,
                        int(stamp * 1000) if stamp else None,
                    )
                )
            now = wall_ms()
            out = StepOutput()
            if self._retry:  # parked facts whose claims came back: older, so first
                self._retry_parked(out, now)
            for partition, records in by_partition.items():
                out.extend(self.core(partition).step(records, now_ms=now))
            self.metrics.batch_size.observe(len(messages))
            if out.held or self.rereads.pending:
                set_aside(held_messages(messages, out.held))
                await self.rereads.after_batch(out.held, self.cores, now)
            if out.replayed:
                self.metrics.replayed_events.inc(out.replayed)
            await self._publish(out, now)

    async def tick(self) -> None:
        now = wall_ms()
        caught_up = {p: await self._caught_up(p, now) for p in list(self.cores)}
        read_at = wall_ms()
        async with self.lock:
            now = wall_ms()
            if now - read_at > CAUGHT_UP_MAX_AGE_MS:
                # A batch held the lock meanwhile (publishing through a broker outage,
                # say): what was caught up then may not be now, and the silence since
                # would make every topic idle at once. Trust nothing this tick.
                caught_up = {}
            out = StepOutput()
            owned = self._owned()
            for partition, core in list(self.cores.items()):
                if partition not in owned:  # mid-rebalance: never move state it may lose
                    continue
                out.extend(core.advance(now_ms=now, caught_up=caught_up.get(partition, False)))
                if core.watermark.value is not None:
                    self.metrics.watermark.labels(str(partition)).set(core.watermark.value / 1000)
                # Parked facts whose claim came back (the ledger reader left them to a
                # batch that has not come), or whose claim died with a worker: decide
                # again (claiming afresh).
                if partition in self._retry or (core.parked and not core.budget.in_flight):
                    self._retry.discard(partition)
                    out.extend(core.retry_parked(now_ms=now))
            if self.rereads.pending:
                await self.rereads.retry(self.cores, now)
            await self._publish(out, now)

    def _owned(self) -> set[int]:
        """Input partitions the consumer is assigned right now."""
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic in self.kinds}

    async def _caught_up(self, partition: int, now_ms: int) -> bool:
        """True if every input topic of the partition has been read up to its high water,
        as a fetch response within the last few seconds gave it.

        The high water comes from fetch responses (right on every broker), and the
        per-partition lag it gives is exported as a metric on the way. A high water no
        recent response confirmed (the broker cannot be reached) is not trusted: see
        ``stream/app/fetch_health.py``.
        """
        core = self.cores.get(partition)
        if core is None or self.rereads.pending_on(partition):
            return False  # records past a gap were held back: not read to the end
        consumer = self.app.consumer
        caught_up = True
        for topic in self.kinds:
            tp = TP(topic, partition)
            if not self.fetch_health.fresh(tp, now_ms):
                caught_up = False
                continue
            highwater = consumer.highwater(tp)
            taken = core.progress.next.get(topic)  # the next offset the state expects
            behind: int | None
            if taken is not None:
                behind = None if highwater is None else max(0, highwater - taken)
            else:  # nothing taken in, nor checkpointed: compare the fetch position
                try:  # never wait on it: a rebalance may be settling positions
                    position = await asyncio.wait_for(consumer.position(tp), 0.5)
                except (TimeoutError, KafkaError):
                    position = None
                behind = (
                    None if highwater is None or position is None else max(0, highwater - position)
                )
            if behind is None:
                caught_up = False
                continue
            self.metrics.consumer_lag.labels(topic, str(partition)).set(behind)
            caught_up = caught_up and behind == 0
        return caught_up

    async def _publish(self, out: StepOutput, now: int) -> None:
        """Checkpoint, then publish, then mark delivered: the order that makes a redelivery
        after a crash an exact repeat (the outbox in each snapshot holds the commands)."""
        await self._checkpoint()
        batches = Batches(producer_of(self.app))
        for code, rec in self._redeliver:
            await self._add_record(batches, code, rec)
        self._redeliver.clear()
        for cmd in out.commands:
            await self._add_record(batches, "i", cmd)
        for rec in out.outcomes:
            await self._add_record(batches, "o", rec)
        for dl in out.dead_letters:
            await self._add_dead_letter(batches, dl)
        for core in self.cores.values():
            for claim in core.take_claims():
                await batches.add(
                    self.ledger_topic, claim_key(claim), encode_claim(claim), partition=0
                )
        await batches.send()
        for core in self.cores.values():
            core.delivered()
        published = wall_ms()
        self.metrics.record_step(out, TYPE_KIND)
        if out.outcomes:
            last = out.outcomes[-1]["at_ms"]
            self._export_budget(budget_day(last, self.guardrails.default_timezone))
        if out.duplicates:
            self.metrics.duplicate_events.inc(out.duplicates)
        # one decision per fact, in order: latencies count only facts that became commands
        for fact, (_, _, result) in zip(out.facts, out.decisions, strict=True):
            if result != "emitted":
                continue
            self.metrics.event_to_command.observe(max(0.0, (published - fact.at_ms) / 1000))
            if fact.received_ms is not None:
                if fact.pattern == "cancel_request":
                    seconds = max(0.0, (published - fact.received_ms) / 1000)
                    self.metrics.cancel_to_retention.observe(seconds)
            else:  # a deadline: due when this batch (or tick) moved the watermark past it
                self.metrics.deadline_to_command.observe(max(0.0, (published - now) / 1000))
        self.metrics.pending_deadlines.set(sum(c.pending_deadlines for c in self.cores.values()))
        self.metrics.journeys.set(sum(len(c.journeys) for c in self.cores.values()))
        if out.dead_letters:  # one line per batch, not per message: bad input can be bulk
            first = out.dead_letters[0]
            codes = Counter(dl.code for dl in out.dead_letters)
            log.warning(
                "dead-lettered %d messages (%s); first: %s[%d]@%d: %s: %s",
                len(out.dead_letters),
                ", ".join(f"{code} {n}" for code, n in sorted(codes.items())),
                first.record.topic,
                first.record.partition,
                first.record.offset,
                first.code,
                first.reason,
            )

    async def _add_record(self, batches: Batches, code: str, record: dict[str, Any]) -> None:
        """A command ("i") to the interventions topic, or an outcome ("o") to outcomes."""
        topic = self.interventions if code == "i" else self.outcomes
        await batches.add(topic, record["user_id"].encode(), encode(record))

    async def _add_dead_letter(self, batches: Batches, dl: DeadLetter) -> None:
        rec = dl.record
        headers = [
            ("goldenflow.error.code", dl.code.encode()),
            ("goldenflow.error.reason", dl.reason.encode()),
            ("goldenflow.source.topic", rec.topic.encode()),
            ("goldenflow.source.partition", str(rec.partition).encode()),
            ("goldenflow.source.offset", str(rec.offset).encode()),
        ]
        await batches.add(self.dlq, rec.key, rec.value, headers=headers)

    async def _checkpoint(self) -> None:
        """Write each journey touched since the last checkpoint to the changelog, once.

        The snapshots go straight to the table's changelog partition (the journey's
        input partition: both are keyed by user id) and are awaited, and the table's
        local store is kept current; faust's recovery reads them back as usual. A
        journey that drifted (JourneyStore.drift) has no changelog record; the local
        store takes the bytes it rests as, so the two share them.
        """
        store = self.table.data
        batches = Batches(producer_of(self.app))
        for partition, core in self.cores.items():
            for user, snap in core.take_dirty():
                key = user.encode()
                if snap is None:
                    store.pop(key, None)
                else:
                    store[key] = snap
                await batches.add(self.changelog, key, snap, partition=partition)
            for user, snap in core.journeys.refreshed:  # drifted: local copy only, shared
                store[user.encode()] = snap
            watermark = core.take_watermark()
            if watermark is not None:
                key = watermark_key(partition)
                store[key] = watermark
                await batches.add(self.changelog, key, watermark, partition=partition)
        await batches.send()


def build_app(settings: Settings, rulebook: RuleBook, registry: CollectorRegistry) -> faust.App:
    """Build the Faust app with its agent, timer, table and web pages."""
    app = faust.App(settings.app_id, **faust_options(settings))
    if settings.profile == "embedded":
        use_fetch_highwaters(app, settings)  # see stream/app/embedded.py
    if settings.fetch_wait is not None:
        set_fetch_wait(app, settings.fetch_wait)  # see stream/app/fetch_wait.py
    wait_out_outages(app)  # see stream/app/recovery_wait.py
    setup_prometheus_sensors(
        app, pattern="/metrics", registry=registry, name_prefix="goldenflow_faust"
    )
    metrics = Metrics(registry)
    # Each batch writes up to batch_max changelog records at once; faust's producer
    # buffer warns (and flushes early) above 100 queued records unless told otherwise.
    app.producer.buffer.max_messages = max(100, 2 * settings.batch_max)
    table = app.Table(
        "journeys",
        default=None,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        use_partitioner=True,
    )
    pipeline = Pipeline(app, settings, rulebook, metrics, table)
    source = app.topic(*settings.input_topics, value_serializer="raw", key_serializer="raw")
    within = settings.batch_within_ms / 1000

    # The agent subscribes the input topics (and makes faust acknowledge them) either
    # way; with the batch drain its stream gets nothing: whole fetches go to the
    # pipeline from the consumer's drain loop (stream/app/drain.py).
    @app.agent(source, name="goldenflow.journeys")
    async def journeys(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, within=within):
            messages = [event.message for event in events]
            await finish_even_if_cancelled(pipeline.handle(messages))

    if settings.drain == "batch":
        use_batch_drain(app, settings.input_topics, pipeline.handle, settings.batch_max)

    ledger = LedgerReader(settings, pipeline.on_claim, pipeline.after_ledger)

    @app.task
    async def read_ledger() -> None:
        await ledger.run()

    @app.timer(interval=0.5)
    async def advance_idle() -> None:
        await pipeline.tick()

    @app.timer(interval=1.0)
    async def watch_broker() -> None:
        # not under the pipeline's lock: a batch may be waiting on the broker
        pipeline.fetch_health.update(list(pipeline.cores), wall_ms(), ledger.last_fetch_ms())

    @app.timer(interval=1.0)
    async def watch_rules() -> None:
        await pipeline.reload_rules()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, **kwargs: Any) -> None:
        inputs = set(settings.input_topics)
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic in inputs}
        async with pipeline.lock:
            # Faust may report a generation's recovery as complete after the next
            # rebalance has already revoked its partitions: hold exactly what the
            # consumer is assigned now, dropping cores of partitions it no longer has.
            pipeline.revoke(set(pipeline.cores) - assigned)
            pipeline.assign(assigned)
            first = not pipeline.ready
            pipeline.ready = True
        if first:
            # What exists after the first recovery (faust's and aiokafka's services,
            # the rules) lives as long as the worker: keep it out of later collections.
            gc.freeze()
        # Any command a crash left in an outbox goes out with the next tick (within
        # half a second); ticking here would hold faust's rebalance up, and the seek of
        # the new partitions to their committed offsets comes after this returns.

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        inputs = set(settings.input_topics)
        async with pipeline.lock:
            pipeline.revoke({tp.partition for tp in revoked if tp.topic in inputs})

    @app.page("/health")
    async def health(self: Any, request: Any) -> Any:
        return web.json_response(
            {
                "status": "ok",
                "ruleset_version": pipeline.rulebook.version,
                "partitions": sorted(pipeline.cores),
            }
        )

    @app.page("/ready")
    async def ready(self: Any, request: Any) -> Any:
        """Readiness: joined the group and recovered its partitions' state at least once."""
        body = {"ready": pipeline.ready, "partitions": sorted(pipeline.cores)}
        return web.json_response(body, status=200 if pipeline.ready else 503)

    app.goldenflow_pipeline = pipeline  # type: ignore[attr-defined]
    return app
