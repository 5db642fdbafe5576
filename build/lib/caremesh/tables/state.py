"""Stage state folded from compacted changelog topics: per owned partition, or global.

`PartitionState` holds key/values for the input partitions a process owns (loaded when a
partition is assigned); `GlobalState` holds all partitions of a topic (every process sees
everything). Both are written by the batch runner (`caremesh.streams.batch`) after the outputs
they remember were acknowledged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from caremesh.errors import ConsentNotReadyError
from caremesh.kafka.admin import wait_for_leaders
from caremesh.kafka.client import AdminClient, Consumer, Message, TopicPartition
from caremesh.kafka.config import KafkaTarget, confluent_config
from caremesh.kafka.io import Output
from caremesh.kafka.reading import end_offsets, read_to_end
from caremesh.topics import GLOBAL_STATE_GROUP

log = logging.getLogger(__name__)


class PartitionState:
    """Key/values per input partition, with a compacted changelog partitioned like the input."""

    def __init__(self, bootstrap: KafkaTarget, changelog: str) -> None:
        self.bootstrap = bootstrap
        self.changelog = changelog
        self.data: dict[int, dict[bytes, bytes]] = {}

    def load(self, partitions: list[int]) -> None:
        """Read the changelog of newly assigned partitions."""
        for p in partitions:
            self.data[p] = {}
        tps = [TopicPartition(self.changelog, p) for p in partitions]
        for msg in read_to_end(self.bootstrap, tps):
            key = msg.key() or b""
            value = msg.value()
            part = self.data[msg.partition() or 0]
            if value is None:
                part.pop(key, None)
            else:
                part[key] = value

    def drop(self, partitions: list[int]) -> None:
        """Forget revoked partitions."""
        for p in partitions:
            self.data.pop(p, None)

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The value of `key` in one partition."""
        return self.data.get(partition, {}).get(key)

    def put(self, partition: int, key: bytes, value: bytes | None) -> Output:
        """Set (or, with None, delete) a key; returns the changelog record to write."""
        if value is None:
            self.data.get(partition, {}).pop(key, None)
        else:
            self.data.setdefault(partition, {})[key] = value
        return Output(self.changelog, key, value, partition=partition, state=True)

    def items(self) -> Iterable[tuple[int, bytes, bytes]]:
        """Every (partition, key, value) held (a snapshot: safe to put while iterating)."""
        return [(p, k, v) for p, part in self.data.items() for k, v in list(part.items())]


class GlobalState:
    """Every key of a compacted topic, followed continuously; local writes apply at once."""

    def __init__(self, bootstrap: KafkaTarget, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.data: dict[str, str] = {}
        self._consumer: Consumer | None = None
        self._next: dict[tuple[str, int], int] = {}

    def load(self) -> None:
        """Read the whole topic, then keep a consumer positioned at its end."""
        admin = AdminClient(confluent_config(self.bootstrap))
        wait_for_leaders(admin, self.topic)
        meta = admin.list_topics(self.topic, timeout=30)
        tps = [TopicPartition(self.topic, p) for p in meta.topics[self.topic].partitions]
        for msg in read_to_end(self.bootstrap, tps):
            self._apply(msg)
        consumer = Consumer(
            {
                **confluent_config(self.bootstrap),
                "group.id": GLOBAL_STATE_GROUP,
                "enable.auto.commit": False,
            }
        )
        ends = end_offsets(consumer, tps)
        consumer.assign([TopicPartition(t, p, high) for (t, p), high in ends.items()])
        self._next = dict(ends)
        self._consumer = consumer

    def _apply(self, msg: Message) -> None:
        self._next[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
        key = (msg.key() or b"").decode("utf-8", "replace")
        value = msg.value()
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value.decode("utf-8", "replace")

    def catch_up(self) -> None:
        """Apply what other processes wrote since the last call (non-blocking)."""
        if self._consumer is None:
            return
        for msg in self._consumer.consume(10_000, 0):
            if msg.error() is None:
                self._apply(msg)

    def catch_up_to_end(self, timeout: float = 10.0) -> None:
        """Apply every record written before this call (blocking up to `timeout` seconds)."""
        consumer = self._consumer
        if consumer is None:
            return
        ends = end_offsets(consumer, [TopicPartition(t, p) for t, p in self._next], timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._next.get(tp, 0) >= end for tp, end in ends.items()):
                return
            for msg in consumer.consume(10_000, 0.2):
                if msg.error() is None:
                    self._apply(msg)
        raise ConsentNotReadyError("patient links: not caught up")

    def put(self, key: str, value: str) -> Output:
        """Set a key locally; returns the record to write."""
        self.data[key] = value
        return Output(self.topic, key.encode(), value.encode())

    def close(self) -> None:
        """Close the follower consumer."""
        if self._consumer is not None:
            self._consumer.close()
