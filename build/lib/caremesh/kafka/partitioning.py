"""The Java client's partitioner, once: murmur2 of the key bytes, as every caremesh producer uses.

DESIGN §2: every producer uses the Java murmur2 partitioner (librdkafka `murmur2_random`,
aiokafka's default), so the partition of a patient key can be computed without a broker.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2 as _aiokafka_murmur2


def murmur2(data: bytes) -> int:
    """Kafka's Java `Utils.murmur2` of `data` (aiokafka's port)."""
    return int(_aiokafka_murmur2(data))


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the Java (murmur2) partitioner gives `key` among `partitions`."""
    if partitions < 1:
        raise ValueError("a topic has at least one partition")
    return (murmur2(key) & 0x7FFFFFFF) % partitions
