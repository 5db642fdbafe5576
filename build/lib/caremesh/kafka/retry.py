"""Kafka error codes that mean "ask again in a moment", shared by every watermark and offset read,
and the retry that waits them out.

A partition's leader is being elected (a new topic, a broker that restarted), or a broker that
was fenced (paused longer than its controller session) comes back with new leader epochs and a
client that cached the old ones is told so until it refreshes its metadata. None of these is the
caller's fault, and `KafkaError.retriable()` is False for several of them when the error is built
from a per-partition code, so callers test membership here and retry within their own bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from confluent_kafka import KafkaError, KafkaException, TopicPartition

_T = TypeVar("_T")

LEADERSHIP_CHANGING: Final[frozenset[int]] = frozenset(
    {
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.OFFSET_NOT_AVAILABLE,
        KafkaError.REPLICA_NOT_AVAILABLE,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
    }
)
"""Codes a watermark or offset read retries (after a short sleep and a metadata refresh)."""


def retrying_leadership(call: Callable[[], _T], timeout: float) -> _T:
    """`call()`, asked again every 0.2 s for up to `timeout` seconds while it raises a
    KafkaException that is retriable or in `LEADERSHIP_CHANGING`; any other error, or the same
    one past `timeout`, is raised as it is."""
    until = time.monotonic() + timeout
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retry = isinstance(error, KafkaError) and (
                error.retriable() or error.code() in LEADERSHIP_CHANGING
            )
            if not retry or time.monotonic() > until:
                raise
            time.sleep(0.2)


def watermark_offsets(consumer: Any, tp: TopicPartition, timeout: float = 10.0) -> tuple[int, int]:
    """A partition's (low, high) offsets from the broker, waiting out a leadership change
    (see `retrying_leadership`) for up to `timeout` seconds."""

    def read() -> tuple[int, int]:
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
        return int(low), int(high)

    return retrying_leadership(read, timeout)
