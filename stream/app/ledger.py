"""The budget ledger on Kafka: one partition every worker reads from the start.

Partition cores claim pool budget (:mod:`stream.domain.budget`); this adapter
appends their claims to the ledger topic and folds every claim it reads, in log
order, into the worker's :class:`~stream.domain.budget.LedgerFold`. All workers
read the same log in the same order and so agree on every grant.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.config import Settings
from stream.domain.budget import Claim

log = logging.getLogger("goldenflow.ledger")


#: Longest the ledger reader lets a broker hold an empty fetch (shorter if the
#: worker's consumer waits less, as on the embedded profile).
LEDGER_FETCH_WAIT_MS = 50


def ledger_topic(settings: Settings) -> str:
    return f"{settings.app_id}-budget-ledger"


class LedgerReader:
    """Reads the ledger topic from its beginning and hands each claim to ``on_claim``."""

    def __init__(
        self,
        settings: Settings,
        on_claim: Callable[[Claim], None],
        after_batch: Callable[[], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.on_claim = on_claim
        self.after_batch = after_batch
        self.topic = ledger_topic(settings)
        self.read = 0
        self._consumer: AIOKafkaConsumer | None = None

    def last_fetch_ms(self) -> int | None:
        """Wall clock of the last fetch response for the ledger (it long-polls every
        50 ms, assigned or not to any input partition: a steady sign of the brokers)."""
        if self._consumer is None:
            return None
        stamp = self._consumer.last_poll_timestamp(TopicPartition(self.topic, 0))
        return int(stamp) if stamp else None

    async def run(self) -> None:
        """Read and fold until cancelled (the worker runs this as a task)."""
        consumer = AIOKafkaConsumer(
            **self.settings.kafka_client_options(),
            group_id=None,
            enable_auto_commit=False,
            # a parked decision waits for this read: no longer than the worker's own
            fetch_max_wait_ms=min(
                LEDGER_FETCH_WAIT_MS, self.settings.fetch_wait or LEDGER_FETCH_WAIT_MS
            ),
        )
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            self._consumer = consumer
            await consumer.seek_to_beginning(tp)
            while True:
                batches = await consumer.getmany(tp, timeout_ms=500)
                for record in batches.get(tp, ()):
                    try:
                        claim = Claim.from_record(orjson.loads(record.value or b""))
                    except (ValueError, KeyError, TypeError) as exc:
                        log.warning(
                            "ignored a malformed ledger record at offset %d: %s", record.offset, exc
                        )
                        continue
                    self.read += 1
                    self.on_claim(claim)
                if batches:
                    await self.after_batch()
        finally:
            self._consumer = None
            await consumer.stop()


def encode_claim(claim: Claim) -> bytes:
    return orjson.dumps(claim.to_record())


def claim_key(claim: Claim) -> bytes:
    return claim.bucket.encode()
