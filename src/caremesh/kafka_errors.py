"""Kafka error codes that mean "ask again in a moment", shared by every watermark and offset read.

A partition's leader is being elected (a new topic, a broker that restarted), or a broker that
was fenced (paused longer than its controller session) comes back with new leader epochs and a
client that cached the old ones is told so until it refreshes its metadata. None of these is the
caller's fault, and `KafkaError.retriable()` is False for several of them when the error is built
from a per-partition code, so callers test membership here and retry within their own bound.
"""

from __future__ import annotations

from typing import Final

from confluent_kafka import KafkaError

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
