"""A failed offset commit after acknowledged outputs loses nothing: only missing permission
stops a batch stage (tests/reliability covers the broker pause that produces these errors)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from caremesh.streams.batch import _commit


class _Message:
    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None


class _Consumer:
    def __init__(self, code: int | None) -> None:
        self.code = code
        self.committed: list[TopicPartition] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        if self.code is not None:
            raise KafkaException(KafkaError(self.code))
        self.committed = offsets


def test_commit_is_one_past_the_last_record_of_each_partition() -> None:
    consumer = _Consumer(None)
    _commit(consumer, [_Message(0, 5), _Message(1, 2), _Message(0, 7)], "s")  # type: ignore[arg-type]
    assert sorted((tp.partition, tp.offset) for tp in consumer.committed) == [(0, 8), (1, 3)]


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError._STATE,
        KafkaError._TIMED_OUT,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    ],
)
def test_refused_commit_is_survived(code: int, caplog: pytest.LogCaptureFixture) -> None:
    _commit(_Consumer(code), [_Message(0, 1)], "validate")  # type: ignore[arg-type]
    assert "commit refused" in caplog.text


def test_missing_permission_stops_the_stage() -> None:
    with pytest.raises(KafkaException):
        _commit(_Consumer(KafkaError.GROUP_AUTHORIZATION_FAILED), [_Message(0, 1)], "validate")  # type: ignore[arg-type]
