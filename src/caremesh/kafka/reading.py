"""Group-less readers of whole topics (the consent ledger, the inbox's alerts and actions, the
vault and dead-letter readers).

A process that folds a topic into state reads every partition from the beginning with its own
consumer, outside any consumer group, so it holds the whole state whichever partitions the
group members of its process own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient

from caremesh.errors import KafkaUnavailableError
from caremesh.kafka.config import KafkaTarget, aiokafka_config, confluent_config
from caremesh.kafka.retry import watermark_offsets


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


def read_to_end_offsets(
    consumer: Consumer, starts: Sequence[KafkaTopicPartition], timeout: float, what: str
) -> Iterator[Message]:
    """The records of each partition in `starts` from its offset (a negative one, or one below
    the log start, means the log start) to the end offset read when the call starts.

    `consumer` is a group-less confluent consumer with `enable.partition.eof`; it is assigned
    the partitions. Raises KafkaUnavailableError naming `what` (a topic's role, never data)
    when the end is not reached within `timeout` seconds."""
    ends: dict[tuple[str, int], int] = {}
    todo: list[KafkaTopicPartition] = []
    for tp in starts:
        low, high = watermark_offsets(consumer, KafkaTopicPartition(tp.topic, tp.partition))
        start = max(tp.offset, low)
        if start < high:
            ends[(tp.topic, tp.partition)] = high
            todo.append(KafkaTopicPartition(tp.topic, tp.partition, start))
    if not todo:
        return
    consumer.assign(todo)
    deadline = time.monotonic() + timeout
    while ends:
        if time.monotonic() > deadline:
            raise KafkaUnavailableError(f"{what}: read timed out")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        where, err = (msg.topic() or "", msg.partition()), msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF and where[1] is not None:
                ends.pop((where[0], where[1]), None)
            continue
        if where[1] is None or (where[0], where[1]) not in ends:
            continue
        yield msg
        if (msg.offset() or 0) + 1 >= ends[(where[0], where[1])]:
            ends.pop((where[0], where[1]), None)
