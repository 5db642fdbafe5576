"""A failed offset commit after acknowledged outputs loses nothing: only missing permission
stops a batch stage (tests/reliability covers the broker pause that produces these errors).
Commits are asynchronous, and synchronous again for revoked partitions."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from caremesh.metrics import Metrics
from caremesh.streams.batch import BatchRunner, _commit


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


class _RecordingConsumer:
    def __init__(self) -> None:
        self.calls: list[tuple[list[tuple[int, int]], bool]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.calls.append(([(tp.partition, tp.offset) for tp in offsets], asynchronous))


def _runner() -> BatchRunner:
    return BatchRunner(
        stage="validate",
        bootstrap="127.0.0.1:1",
        group_id="g",
        source="t",
        handler=lambda m: [],
        metrics=Metrics(),
        deadletter_topic="deadletter.v1",
    )


def test_batches_commit_asynchronously_and_a_revoke_waits_for_its_partitions() -> None:
    """The loop does not wait for the coordinator; the offsets of acknowledged batches are
    committed again, synchronously, for the partitions a rebalance takes away, so their next
    owner does not read those batches again."""
    runner, consumer = _runner(), _RecordingConsumer()
    for batch in ([_Message(0, 4), _Message(1, 9)], [_Message(0, 5)]):
        runner._committing.update(_commit(consumer, batch, "validate"))  # type: ignore[arg-type]
    assert all(asynchronous for _, asynchronous in consumer.calls)
    runner._on_revoke(consumer, [TopicPartition("t", 0)])  # type: ignore[arg-type]
    assert consumer.calls[-1] == ([(0, 6)], False)
    assert runner._committing == {("t", 1): 10}
    runner._on_revoke(consumer, [TopicPartition("t", 0)])  # type: ignore[arg-type]
    assert len(consumer.calls) == 3  # nothing pending for partition 0 any more


def test_an_asynchronous_commit_refused_for_permission_stops_the_stage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = _runner()
    runner._on_commit(KafkaError(KafkaError.REBALANCE_IN_PROGRESS), [])
    assert runner._commit_refused is None
    assert "commit refused after a rebalance" in caplog.text
    failed = TopicPartition("t", 0, 3)
    runner._on_commit(None, [failed])
    assert runner._commit_refused is None
    runner._on_commit(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED), [])
    assert runner._commit_refused is not None
    assert runner._commit_refused.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
