"""Create goldenflow's topics explicitly, with the configured partitions and retention."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from stream.app.ledger import ledger_topic
from stream.config import Settings

log = logging.getLogger(__name__)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition the default partitioner gives ``key`` among ``partitions`` (murmur2,
    as aiokafka and the Java client do): where a shopper's events, and so its journey,
    live."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def all_topics(settings: Settings) -> list[str]:
    return [
        *settings.input_topics,
        *settings.output_topics,
        changelog_topic(settings),
        ledger_topic(settings),
    ]


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app_id}-journeys-changelog"


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every topic that does not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in all_topics(settings) if t not in existing]
        created: list[str] = []
        configs = {
            "retention.ms": str(settings.retention_ms),
            "retention.bytes": "-1",
            "cleanup.policy": "delete",
        }
        for name in wanted:
            cfg = dict(configs)
            if name == changelog_topic(settings):
                cfg["cleanup.policy"] = "compact"
                cfg["retention.ms"] = "-1"
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            name=name,
                            # the budget ledger is one ordered log
                            num_partitions=1
                            if name == ledger_topic(settings)
                            else settings.partitions,
                            replication_factor=settings.replication_factor,
                            topic_configs=cfg,
                        )
                    ]
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics %s with %d partitions", created, settings.partitions)
        return created
    finally:
        await admin.close()
