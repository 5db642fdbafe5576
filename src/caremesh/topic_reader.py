"""Group-less readers of whole topics (the consent ledger, the inbox's alerts and actions).

A process that folds a topic into state reads every partition from the beginning with its own
consumer, outside any consumer group, so it holds the whole state whichever partitions the
group members of its process own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from caremesh.errors import KafkaUnavailableError
from caremesh.security.clients import KafkaTarget, aiokafka_config, confluent_config


def partition_ids(bootstrap_servers: KafkaTarget, topic: str) -> list[int]:
    """The partition numbers of a topic, or [] when it does not exist or the broker is away."""
    try:
        meta = AdminClient(confluent_config(bootstrap_servers)).list_topics(topic, timeout=10)
    except KafkaException:
        return []
    found = meta.topics.get(topic)
    if found is None or found.error is not None:
        return []
    return list(found.partitions)


async def open_from_beginning(
    bootstrap_servers: KafkaTarget, topics: Sequence[str]
) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A started consumer assigned every partition of `topics`, positioned at their beginning.

    Raises KafkaUnavailableError (transient) when a topic has no partitions yet.
    """
    consumer = AIOKafkaConsumer(
        **aiokafka_config(bootstrap_servers),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    tps: list[TopicPartition] = []
    for topic in topics:
        partitions = await asyncio.to_thread(partition_ids, bootstrap_servers, topic)
        if not partitions:
            await consumer.stop()
            raise KafkaUnavailableError(f"topic {topic} has no partitions")
        tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer, tps
