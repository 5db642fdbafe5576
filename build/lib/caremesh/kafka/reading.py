"""Group-less readers of whole topics (the consent ledger, the inbox's alerts and actions, the
vault and dead-letter readers).

A process that folds a topic into state reads every partition from the beginning with its own
consumer, outside any consumer group, so it holds the whole state whichever partitions the
group members of its process own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient

from caremesh.errors import KafkaUnavailableError
from caremesh.kafka.config import KafkaTarget, aiokafka_config, confluent_config
from caremesh.kafka.retry import LEADERSHIP_CHANGING, watermark_offsets
from caremesh.topics import STATE_READER_GROUP


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


log = logging.getLogger(__name__)


def end_offsets(
    consumer: Consumer, tps: list[KafkaTopicPartition], timeout: float = 60.0
) -> dict[tuple[str, int], int]:
    """The end offsets of several partitions in one ListOffsets request per leader (reading
    them one partition at a time costs a round trip each), retrying while a leader is being
    elected.

    Each retry asks for the topic's metadata first: a client whose first metadata answer came
    while the broker was fenced (after a pause longer than its session with the controller)
    keeps "unknown partition" cached otherwise, for as long as it lives."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            # offset -1 asks for the latest offset (OFFSET_END)
            found = consumer.offsets_for_times(
                [KafkaTopicPartition(tp.topic, tp.partition, -1) for tp in tps], timeout=10
            )
            failed = next((tp.error for tp in found if tp.error is not None), None)
            if failed is not None:
                raise KafkaException(failed)
            return {(tp.topic, tp.partition): int(tp.offset) for tp in found}
        except KafkaException as exc:
            if exc.args[0].code() not in LEADERSHIP_CHANGING or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            for topic in {tp.topic for tp in tps}:
                with contextlib.suppress(KafkaException):
                    consumer.list_topics(topic, timeout=5)


STATE_READ_STALL_SECONDS = 30.0
"""How long a state load may go without a record or an end-of-partition before its consumer is
replaced (librdkafka's fetches were seen to stop for good, e.g. after a broker pause)."""


def state_reader(bootstrap: KafkaTarget) -> Consumer:
    return Consumer(
        {
            **confluent_config(bootstrap),
            "group.id": STATE_READER_GROUP,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",  # an offset below the log start reads from it
        }
    )


def read_to_end(
    bootstrap: KafkaTarget, tps: list[KafkaTopicPartition], stall: float = STATE_READ_STALL_SECONDS
) -> Iterable[Message]:
    """Every record of the given partitions, from the beginning to their current end.

    A read that brings nothing for `stall` seconds goes on with a new consumer, from the next
    offset of each partition not read to its end yet: no record is skipped."""
    if not tps:
        return
    consumer = state_reader(bootstrap)
    try:
        ends = end_offsets(consumer, tps)
        pending = {k: 0 for k, high in ends.items() if high > 0}  # partition -> next offset
        if not pending:
            return
        consumer.assign([KafkaTopicPartition(t, p, 0) for t, p in pending])
        progress = time.monotonic()
        while pending:
            if time.monotonic() - progress > stall:
                log.warning("state load made no progress for %.0fs; replacing its consumer", stall)
                # close() may wait on the stalled connection: let it finish in the background.
                threading.Thread(
                    target=consumer.close, name="close-state-reader", daemon=True
                ).start()
                consumer = state_reader(bootstrap)
                consumer.assign([KafkaTopicPartition(t, p, at) for (t, p), at in pending.items()])
                progress = time.monotonic()
            for msg in consumer.consume(1000, 1.0):
                where = (msg.topic() or "", msg.partition() or 0)
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.pop(where, None)
                        progress = time.monotonic()
                    continue
                progress = time.monotonic()
                yield msg
                offset = msg.offset() or 0
                if where in pending:
                    pending[where] = offset + 1
                    if offset + 1 >= ends[where]:
                        pending.pop(where, None)
    finally:
        consumer.close()


def next_batch(consumer: Consumer, size: int) -> list[Message]:
    """Wait for one record, then take what else is already there: low latency when traffic is
    light, batches when it is heavy (`consume(n, t)` would wait `t` to fill `n`)."""
    first = consumer.poll(0.2)
    if first is None:
        return []
    batch = [first, *consumer.consume(size - 1, 0)]
    return [m for m in batch if m.error() is None]
