"""Watermark and offset reads wait out a leadership change, and only that, within their bound:
the registry fold, the stages' consent and key readers, and the operator commands
(`caremesh deadletters`, `caremesh research export`) all read through them."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from caremesh.kafka.retry import retrying_leadership, watermark_offsets


class _WatermarkConsumer:
    """Raises the given error codes from `get_watermark_offsets` first, then answers."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = errors
        self.calls = 0

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float, cached: bool
    ) -> tuple[int, int]:
        self.calls += 1
        assert not cached  # a cached answer would be the stale one
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return 3, 17


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.REPLICA_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError._ALL_BROKERS_DOWN,
    ],
)
def test_watermarks_wait_out_a_leadership_change(code: int) -> None:
    """A broker back from a fence answers with new leader epochs for a moment; the read waits
    it out (these codes are not `retriable()` when built from a partition's code)."""
    consumer = _WatermarkConsumer([code, code])
    assert watermark_offsets(consumer, TopicPartition("registry", 0), timeout=10) == (3, 17)
    assert consumer.errors == []
    assert consumer.calls == 3


def test_a_lasting_error_is_raised_at_once() -> None:
    consumer = _WatermarkConsumer([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException) as raised:
        watermark_offsets(consumer, TopicPartition("registry", 0), timeout=10)
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert consumer.calls == 1


def test_a_leadership_change_that_outlasts_the_bound_is_raised() -> None:
    consumer = _WatermarkConsumer([KafkaError.LEADER_NOT_AVAILABLE] * 1000)
    started = time.monotonic()
    with pytest.raises(KafkaException) as raised:
        watermark_offsets(consumer, TopicPartition("registry", 0), timeout=0.5)
    assert raised.value.args[0].code() == KafkaError.LEADER_NOT_AVAILABLE
    assert 0.5 <= time.monotonic() - started < 5
    assert 2 <= consumer.calls < 10  # asked again every 0.2 s, not in a busy loop


def test_any_read_is_retried_the_same_way() -> None:
    """`caremesh deadletters list --since` reads `offsets_for_times` through the same retry."""
    answers: list[object] = [KafkaException(KafkaError(KafkaError.UNKNOWN_LEADER_EPOCH)), [7]]

    def offsets_for_times() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert retrying_leadership(offsets_for_times, 10) == [7]
    assert answers == []
