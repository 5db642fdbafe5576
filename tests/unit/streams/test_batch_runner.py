"""The batch runner's per-record outcomes and its write order, without a broker: state records
are produced only after every other output of the batch was acknowledged, a transient failure
is retried (never dead-lettered), a rejection or a raising stage is dead-lettered with its
coordinates and no payload in the reason."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from caremesh import envelope
from caremesh.errors import ConsentNotReadyError, RejectedInputError
from caremesh.kafka import reading
from caremesh.kafka.io import Output
from caremesh.kafka.reading import end_offsets
from caremesh.metrics import Metrics
from caremesh.streams.batch import BatchRunner, _StoppingError
from caremesh.tables.state import PartitionState


class _Message:
    def __init__(self, value: bytes, offset: int = 7) -> None:
        self._value, self._offset = value, offset

    def topic(self) -> str:
        return "clinical"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"patient-1"

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return [("ce_id", b"m-1")]


class _Producer:
    """Records produce and flush calls; `fail_flush` makes the n-th flush report an error."""

    def __init__(self, runner: BatchRunner, fail_flush: int | None = None) -> None:
        self.runner = runner
        self.calls: list[str] = []
        self.fail_flush = fail_flush

    def produce(self, topic: str, **_: object) -> None:
        self.calls.append(f"produce {topic}")

    def flush(self, timeout: float) -> int:
        self.calls.append("flush")
        if self.fail_flush is not None and self.calls.count("flush") == self.fail_flush:
            self.runner._errors.append("_MSG_TIMED_OUT")
        return 0


def _runner(handler: object, **kw: object) -> BatchRunner:
    return BatchRunner(
        stage="test",
        bootstrap="127.0.0.1:1",
        group_id="g",
        source="clinical",
        handler=handler,  # type: ignore[arg-type]
        metrics=Metrics(),
        deadletter_topic="deadletter.v1",
        **kw,  # type: ignore[arg-type]
    )


def test_state_records_are_written_after_the_outputs_they_remember() -> None:
    state = PartitionState("127.0.0.1:1", "app-test-state")
    outputs = [
        state.put(2, b"patient-1", b"alert raised"),
        Output("alerts", b"patient-1", b"alert"),
        Output("audit", b"a-1", b"decision"),
    ]
    runner = _runner(lambda m: [])
    producer = _Producer(runner)
    runner._write(producer, outputs)  # type: ignore[arg-type]
    assert producer.calls == [
        "produce alerts",
        "produce audit",
        "flush",
        "produce app-test-state",
        "flush",
    ]


def test_no_state_record_is_produced_when_the_outputs_were_not_acknowledged() -> None:
    state = PartitionState("127.0.0.1:1", "app-test-state")
    runner = _runner(lambda m: [])
    producer = _Producer(runner, fail_flush=1)
    with pytest.raises(RuntimeError, match="unacknowledged"):
        runner._write(producer, [Output("alerts", b"k", b"v"), state.put(2, b"k", b"s")])  # type: ignore[arg-type]
    assert "produce app-test-state" not in producer.calls


def test_transient_failures_are_retried_until_the_handler_succeeds() -> None:
    failures = [ConsentNotReadyError("not yet"), KafkaException(KafkaError(KafkaError._TRANSPORT))]

    def handler(msg: object) -> list[Output]:
        if failures:
            raise failures.pop(0)
        return [Output("out", b"k", b"v")]

    runner = _runner(handler)
    assert runner._handle(_Message(b"{}")) == [Output("out", b"k", b"v")]  # type: ignore[arg-type]
    assert runner.metrics.retries.labels("test")._value.get() == 2


def test_a_stop_during_retries_leaves_the_batch_uncommitted() -> None:
    def handler(msg: object) -> list[Output]:
        raise ConsentNotReadyError("never")

    runner = _runner(handler)
    threading.Timer(0.3, runner._stop.set).start()
    with pytest.raises(_StoppingError):
        runner._handle(_Message(b"{}"))  # type: ignore[arg-type]


def test_rejected_and_raising_records_are_dead_lettered_without_payload_in_the_reason() -> None:
    def handler(msg: object) -> list[Output]:
        raise RejectedInputError("invalid-json", "clinical record is not JSON")

    (out,) = _runner(handler)._handle(_Message(b"secret payload"))  # type: ignore[arg-type]
    headers = dict(out.headers)
    assert out.topic == "deadletter.v1"
    assert (out.key, out.value) == (b"patient-1", b"secret payload")
    assert headers[envelope.H_ERROR_CODE] == b"invalid-json"
    assert headers[envelope.H_ORIGIN_OFFSET] == b"7"
    assert all(b"secret" not in (v if isinstance(v, bytes) else b"") for _, v in out.headers)

    marker = "fault-5e1d"
    runner = _runner(lambda m: [Output("out", b"k", b"v")], fault_marker=marker)
    (fault,) = runner._handle(_Message(b"x fault-5e1d x"))  # type: ignore[arg-type]
    assert dict(fault.headers)[envelope.H_ERROR_CODE] == b"stage-error"
    assert dict(fault.headers)[envelope.H_ERROR_REASON] == b"test raised InjectedFaultError"
    assert runner._handle(_Message(b"clean")) == [Output("out", b"k", b"v")]  # type: ignore[arg-type]


def test_a_sealed_dead_letter_replaces_key_and_value() -> None:
    def seal(msg: object) -> tuple[bytes | None, bytes | None, list[tuple[str, str]]]:
        return b"dk1.abc", b"sealed", [("caremesh-deadletter-encryption", "v1")]

    def handler(msg: object) -> list[Output]:
        raise ValueError("boom")

    (out,) = _runner(handler, seal=seal)._handle(_Message(b"secret"))  # type: ignore[arg-type]
    assert (out.key, out.value) == (b"dk1.abc", b"sealed")
    assert ("caremesh-deadletter-encryption", "v1") in out.headers


@dataclass
class _Offset:
    """A partition of an `offsets_for_times` answer (confluent's TopicPartition takes no error)."""

    topic: str
    partition: int
    offset: int
    error: KafkaError | None = None


class _OffsetsConsumer:
    """Answers `offsets_for_times` with the given per-partition errors first, then offsets."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = errors
        self.metadata_asked = 0

    def offsets_for_times(self, tps: list[TopicPartition], timeout: float) -> list[_Offset]:
        if self.errors:
            error = KafkaError(self.errors.pop(0))
            return [_Offset(tp.topic, tp.partition, -1, error) for tp in tps]
        return [_Offset(tp.topic, tp.partition, 40 + tp.partition) for tp in tps]

    def list_topics(self, topic: str, timeout: float) -> None:
        self.metadata_asked += 1


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.OFFSET_NOT_AVAILABLE,
    ],
)
def test_end_offsets_wait_out_a_new_leader_epoch(code: int) -> None:
    """After a broker was fenced and came back, its partitions have new leader epochs; a state
    load that asks for end offsets in that moment retries instead of stopping the worker."""
    consumer = _OffsetsConsumer([code, code])
    tps = [TopicPartition("state", 0), TopicPartition("state", 1)]
    assert end_offsets(consumer, tps) == {("state", 0): 40, ("state", 1): 41}  # type: ignore[arg-type]
    assert consumer.metadata_asked == 2


def test_end_offsets_raise_a_lasting_error_at_once() -> None:
    consumer = _OffsetsConsumer([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException):
        end_offsets(consumer, [TopicPartition("state", 0)])  # type: ignore[arg-type]


class _Record:
    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def topic(self) -> str:
        return "state"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None


class _StateReader:
    """A state reader whose partitions end at offset 4: `consume` brings `records` once, then
    nothing (a fetcher that stopped)."""

    def __init__(self, records: list[_Record]) -> None:
        self.records = records
        self.assigned: list[tuple[int, int]] = []
        self.closed = threading.Event()

    def offsets_for_times(self, tps: list[TopicPartition], timeout: float) -> list[_Offset]:
        return [_Offset(tp.topic, tp.partition, 4) for tp in tps]

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = sorted((tp.partition, tp.offset) for tp in tps)

    def consume(self, num_messages: int, timeout: float) -> list[_Record]:
        out, self.records = self.records, []
        if not out:
            time.sleep(0.01)
        return out

    def close(self) -> None:
        self.closed.set()


def test_a_state_load_whose_fetches_stopped_goes_on_with_a_new_consumer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Partition 1 is read to its end, partition 0 up to offset 1, then nothing comes: the load
    goes on with a new consumer from offset 2 of partition 0 only, and yields each record once."""
    first = _StateReader([_Record(0, 0), _Record(0, 1), *(_Record(1, o) for o in range(4))])
    second = _StateReader([_Record(0, 2), _Record(0, 3)])
    readers = [first, second]
    monkeypatch.setattr(reading, "state_reader", lambda bootstrap: readers.pop(0))
    tps = [TopicPartition("state", 0), TopicPartition("state", 1)]
    read = [(m.partition(), m.offset()) for m in reading.read_to_end("kafka", tps, stall=0.2)]
    assert sorted(read) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert len(read) == 8
    assert first.assigned == [(0, 0), (1, 0)]
    assert second.assigned == [(0, 2)]
    assert first.closed.wait(5)
    assert second.closed.is_set()
