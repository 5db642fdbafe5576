"""A batch stage runner on confluent-kafka, for stages whose per-message cost is small.

Faust's per-event path costs about 0.4 ms here (a Faust agent passing raw bytes through runs at
about 2,400 events/s on the reference machine, where a confluent-kafka loop runs at 36,000), so
the validate stage, which must keep up with every source, runs in this loop instead: consume a
batch, run the pure per-message function, produce the outputs with the shared idempotent producer
configuration, wait for the broker's acknowledgement of all of them, and only then commit the
batch's offsets (at-least-once; outputs carry stable `ce_id`s). A failed delivery stops the
process without committing, so the batch is processed again after the restart.

State comes in two kinds, each backed by a compacted topic (the equivalent of a Faust table's
changelog): `PartitionState` holds key/values for the input partitions this process owns
(loaded when a partition is assigned), and `GlobalState` holds all partitions of a topic
(every process sees everything, like a Faust GlobalTable). A stage that reads several topics
co-partitioned by patient (clinical records and consent events, say) subscribes to all of them
with the range assignor, so partition p of each goes to the same process.

Outputs are written in two phases: first every record the batch produced (alerts, audit,
outbox and research records), then, once the broker acknowledged those, the state records that
remember them (`Output.state`), then the commit. A crash between the two phases leaves state
that has not seen the batch, so the replay writes the same records again (same ids) instead of
finding state that says they were written when they were not.

A handler that raises a transient error (broker away, consent state not caught up) is retried
with a backoff, never dead-lettered (DESIGN §4).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from caremesh import envelope
from caremesh.errors import ConsentNotReadyError, KafkaUnavailableError, RejectedInputError
from caremesh.kafka import config as kafka_config
from caremesh.kafka.client import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from caremesh.kafka.config import KafkaTarget
from caremesh.kafka.io import Output
from caremesh.kafka.reading import next_batch
from caremesh.metrics import Metrics
from caremesh.tables.state import PartitionState

log = logging.getLogger(__name__)

CRASH_EXIT_CODE = 70
MAX_BACKOFF = 10.0
TRANSIENT = (KafkaUnavailableError, ConsentNotReadyError, TimeoutError, ConnectionError)
"""Handler failures retried until they pass: a record is never dead-lettered because the broker
or the consent state was not there yet (a KafkaException from a client call counts too, unless
it is fatal)."""
REJOIN_TIMEOUT_SECONDS = 30.0
"""After a revocation (e.g. a session timeout), how long the consumer may go without a new
assignment before it is replaced: after a broker pause (SIGSTOP/SIGCONT), librdkafka's group
coordinator connection was seen stuck for good ("1 out-queue" request timing out every minute),
so the stage never rejoined its group (tests/reliability, test 3)."""


_T = TypeVar("_T")
Handler = Callable[[Message], list[Output]]
Sealer = Callable[[Message], tuple[bytes | None, bytes | None, list[tuple[str, str]]]]
"""How a dead letter of a patient-keyed record is written: its key, value and extra headers
(`caremesh.tables.deadletters.protect`:
sealed under the patient's data key, or dropped when erased)."""


class InjectedFaultError(Exception):
    """The test-only fault of `worker.fault_marker` (never raised when it is unset)."""


class _StoppingError(Exception):
    """Raised inside the loop when a stop is asked for while a transient failure is retried."""


class BatchRunner:
    """Runs one stage: consume → handle → produce → flush → commit, in a thread of its own."""

    def __init__(
        self,
        *,
        stage: str,
        bootstrap: KafkaTarget,
        group_id: str,
        source: str | Sequence[str],
        handler: Handler,
        metrics: Metrics,
        deadletter_topic: str,
        states: Sequence[PartitionState] = (),
        on_batch_start: Callable[[list[Message]], None] | None = None,
        prepare: Callable[[], None] | None = None,
        on_tick: Callable[[], list[Output]] | None = None,
        tick_interval: float = 60.0,
        seal: Sealer | None = None,
        fault_marker: str | None = None,
        batch_size: int = 500,
    ) -> None:
        self.stage = stage
        self.bootstrap = bootstrap
        self.sources = [source] if isinstance(source, str) else list(source)
        self.handler = handler
        self.metrics = metrics
        self.deadletter_topic = deadletter_topic
        self.states = list(states)
        self.on_batch_start = on_batch_start
        self.prepare = prepare
        self.on_tick = on_tick
        self.tick_interval = tick_interval
        self.seal = seal
        self.fault_marker = fault_marker.encode() if fault_marker else None
        self.batch_size = batch_size
        self.group_id = group_id
        self.assigned: set[int] = set()
        self.ready = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors: list[str] = []
        self._committing: dict[tuple[str, int], int] = {}
        """Offsets committed asynchronously (their outputs are acknowledged); committed again,
        synchronously, when their partitions are revoked and when the stage stops."""
        self._commit_refused: KafkaError | None = None
        self._unassigned_since: float | None = None
        self._next_tick = time.monotonic() + tick_interval
        self.rejoin_timeout = REJOIN_TIMEOUT_SECONDS
        self.session_timeout: float | None = None
        """Group session timeout in seconds (None: librdkafka's 45 s); the worker sets it from
        `settings.worker.session_timeout_seconds`; the heartbeat interval is a third of it."""

    def start(self) -> None:
        """Start the consume loop in a daemon thread."""
        self._thread = threading.Thread(target=self._main, name=f"stage-{self.stage}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the loop to finish its batch, commit and leave the group."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self) -> None:
        try:
            self._run()
        except _StoppingError:
            log.info("stage %s stopped while retrying; its batch was not committed", self.stage)
        except Exception as exc:  # noqa: BLE001 - crash the process: nothing is committed
            error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
            code = error.name() if isinstance(error, KafkaError) else ""
            log.critical(
                "stage %s stopped the worker (%s%s)\n%s",
                self.stage,
                type(exc).__name__,
                f" {code}" if code else "",
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            logging.shutdown()
            os._exit(CRASH_EXIT_CODE)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ids = sorted({tp.partition for tp in partitions})
        for state in self.states:
            state.load(ids)
        self.assigned |= set(ids)
        self._unassigned_since = None
        self.ready = True
        log.info("stage %s assigned %d partitions", self.stage, len(ids))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._commit_pending(consumer, revoked)
        ids = sorted({tp.partition for tp in partitions})
        for state in self.states:
            state.drop(ids)
        self.assigned -= set(ids)
        self._unassigned_since = time.monotonic()

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(err.name())

    def _run(self) -> None:
        if self.prepare is not None:
            self._retrying(self.prepare)
        producer = Producer(kafka_config.producer_config(self.bootstrap, **{"linger.ms": 2}))
        consumer = self._subscribe()
        in_count = self.metrics.messages_in.labels(self.stage)
        duration = self.metrics.stage_duration.labels(self.stage)
        cpu = self.metrics.stage_cpu.labels(self.stage)
        cpu_at = time.thread_time()
        try:
            while not self._stop.is_set():
                now = time.thread_time()
                cpu.inc(now - cpu_at)
                cpu_at = now
                if self._stuck():
                    consumer = self._replace(consumer)
                if self.on_tick is not None and time.monotonic() >= self._next_tick:
                    self._next_tick = time.monotonic() + self.tick_interval
                    self._write(producer, self._retrying(self.on_tick))
                batch = next_batch(consumer, self.batch_size)
                if self._commit_refused is not None:  # reported by `_on_commit`, in the poll
                    raise KafkaException(self._commit_refused)
                if not batch:
                    continue
                if self.on_batch_start is not None:
                    self._retrying(functools.partial(self.on_batch_start, batch))
                outputs: list[Output] = []
                for msg in batch:
                    started = time.perf_counter()
                    in_count.inc()
                    outputs += self._handle(msg)
                    duration.observe(time.perf_counter() - started)
                self._write(producer, outputs)
                self._committing.update(_commit(consumer, batch, self.stage))
        finally:
            producer.flush(30)
            self._commit_pending(consumer, set(self._committing))
            consumer.close()

    def _commit_pending(self, consumer: Consumer, which: set[tuple[str, int]]) -> None:
        """Commit again, and wait for, the asynchronously committed offsets of `which`, so that
        the next owner of these partitions does not read acknowledged batches again."""
        offsets = [
            TopicPartition(topic, part, offset)
            for (topic, part), offset in self._committing.items()
            if (topic, part) in which
        ]
        for key in which:
            self._committing.pop(key, None)
        if offsets:
            with contextlib.suppress(KafkaException):  # refused: the next owner reads them again
                consumer.commit(offsets=offsets, asynchronous=False)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The outcome of a commit (served by the consumer's poll): a missing permission stops
        the stage; any other refusal loses nothing (see `_commit`) and is logged."""
        error = err or next((tp.error for tp in partitions or () if tp.error is not None), None)
        if error is None:
            return
        if error.code() in _COMMIT_FATAL:
            self._commit_refused = error
        else:
            _log_refused(error, self.stage)

    def _write(self, producer: Producer, outputs: list[Output]) -> None:
        """Produce a batch's outputs, the state records last, each phase acknowledged."""
        later = [out for out in outputs if out.state]
        for phase in ([out for out in outputs if not out.state], later):
            if not phase:
                continue
            for out in phase:
                self._produce(producer, out)
            left = producer.flush(60)
            if left or self._errors:
                raise RuntimeError(f"{left} records unacknowledged, errors {self._errors[:3]}")

    def _retrying(self, call: Callable[[], _T]) -> _T:
        """`call()`, retried with a backoff while it fails transiently."""
        backoff = 0.1
        while True:
            try:
                return call()
            except (*TRANSIENT, KafkaException) as exc:
                if isinstance(exc, KafkaException) and _fatal(exc):
                    raise
                self.metrics.retries.labels(self.stage).inc()
                log.warning(
                    "transient failure in %s (%s); retrying in %.1fs",
                    self.stage,
                    type(exc).__name__,
                    backoff,
                )
                if self._stop.wait(backoff):
                    raise _StoppingError from None
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _subscribe(self) -> Consumer:
        overrides: dict[str, object] = {
            "enable.auto.commit": False,
            # co-partitioned sources: partition p of every source goes to the same member
            "partition.assignment.strategy": "range",
            "on_commit": self._on_commit,
        }
        if self.session_timeout is not None:
            overrides["session.timeout.ms"] = int(self.session_timeout * 1000)
            overrides["heartbeat.interval.ms"] = int(self.session_timeout * 1000 / 3)
        consumer = Consumer(
            kafka_config.consumer_config(self.bootstrap, self.group_id, **overrides)
        )
        self._unassigned_since = time.monotonic()
        consumer.subscribe(self.sources, on_assign=self._on_assign, on_revoke=self._on_revoke)
        return consumer

    def _stuck(self) -> bool:
        """True when no assignment (not even an empty one) came for `rejoin_timeout` seconds."""
        since = self._unassigned_since
        return since is not None and time.monotonic() - since > self.rejoin_timeout

    def _replace(self, consumer: Consumer) -> Consumer:
        """A fresh consumer in place of one whose group membership is stuck; nothing is lost:
        offsets are committed only after the outputs, so the next owner resumes from them."""
        log.warning(
            "stage %s got no assignment for %.0fs; replacing its consumer",
            self.stage,
            self.rejoin_timeout,
        )
        # Offsets the old membership committed are not the new one's to repeat: the partitions
        # may have moved meanwhile, and an older offset would only make their owner read again.
        self._committing.clear()
        # close() may wait on the stuck coordinator: let it finish in the background.
        threading.Thread(target=consumer.close, name=f"close-{self.stage}", daemon=True).start()
        return self._subscribe()

    def _call_handler(self, msg: Message) -> list[Output]:
        if self.fault_marker is not None and self.fault_marker in (msg.value() or b""):
            raise InjectedFaultError(self.stage)
        return self.handler(msg)

    def _handle(self, msg: Message) -> list[Output]:
        try:
            return self._retrying(lambda: self._call_handler(msg))
        except _StoppingError:
            raise
        except RejectedInputError as exc:
            return [self._dead_letter(msg, exc.code, exc.detail)]
        except Exception as exc:  # noqa: BLE001 - nothing may be acked without an outcome
            log.error(
                "stage %s failed on topic=%s partition=%s offset=%s (%s)\n%s",
                self.stage,
                msg.topic(),
                msg.partition(),
                msg.offset(),
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            return [
                self._dead_letter(msg, "stage-error", f"{self.stage} raised {type(exc).__name__}")
            ]

    def _dead_letter(self, msg: Message, code: str, reason: str) -> Output:
        headers: list[tuple[str, str | bytes | None]] = [
            (str(h[0]), h[1]) for h in (msg.headers() or [])
        ]
        headers += deadletter_headers(
            code,
            self.stage,
            reason,
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
        )
        key, value = msg.key(), msg.value()
        if self.seal is not None:
            seal = self.seal
            key, value, extra = self._retrying(lambda: seal(msg))
            done = {name for name, _ in extra}
            headers = [h for h in headers if h[0] not in done] + list(extra)
        self.metrics.rejected.labels(self.stage, code).inc()
        log.info(
            "dead-lettered: stage=%s code=%s topic=%s partition=%s offset=%s",
            self.stage,
            code,
            msg.topic(),
            msg.partition(),
            msg.offset(),
        )
        return Output(self.deadletter_topic, key, value, headers)

    def _produce(self, producer: Producer, out: Output) -> None:
        partition = -1 if out.partition is None else out.partition  # -1: the partitioner decides
        while True:
            try:
                producer.produce(
                    out.topic,
                    value=out.value,
                    key=out.key,
                    headers=out.headers,
                    partition=partition,
                    on_delivery=self._delivered,
                )
                return
            except BufferError:
                producer.poll(0.05)


_REBALANCED = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._ASSIGNMENT_LOST,
    KafkaError._NO_OFFSET,
}


_COMMIT_FATAL = {
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED,
}


@dataclass
class WorkerApp:
    """The stages one worker process runs, and the metrics they share."""

    metrics: Metrics
    stages: list[BatchRunner] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """True once every stage has its partitions (for /health)."""
        return all(stage.ready for stage in self.stages)


def _fatal(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and (error.fatal() or error.code() in _COMMIT_FATAL)


def _commit(consumer: Consumer, batch: list[Message], stage: str) -> dict[tuple[str, int], int]:
    """Commit a batch whose outputs the broker acknowledged, asynchronously (the next batch need
    not wait for the coordinator; the outcome reaches `BatchRunner._on_commit`); returns the
    offsets asked for.

    A refused or failed commit loses nothing: the outputs are acknowledged already, and whoever
    owns the partitions next (this process after a rebalance or a restart) reads the batch
    again, writing the same `ce_id`s (at-least-once). So only a missing permission stops the
    process; a rebalance, a session timeout after a broker pause or a coordinator move is
    logged and the loop goes on.
    """
    offsets = _next_offsets(batch)
    try:
        consumer.commit(offsets=offsets, asynchronous=True)
    except KafkaException as exc:
        error = exc.args[0]
        if error.code() in _COMMIT_FATAL:
            raise
        _log_refused(error, stage)
    return {(tp.topic, tp.partition): tp.offset for tp in offsets}


def _log_refused(error: KafkaError, stage: str) -> None:
    why = "after a rebalance" if error.code() in _REBALANCED else "by the broker"
    log.warning("stage %s: commit refused %s (%s)", stage, why, error.name())


def _next_offsets(batch: list[Message]) -> list[TopicPartition]:
    """The offsets to commit after a batch: one past the last record of each partition."""
    last: dict[tuple[str, int], int] = {}
    for msg in batch:
        where = (msg.topic() or "", msg.partition() or 0)
        last[where] = max(last.get(where, -1), msg.offset() or 0)
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def deadletter_headers(
    code: str, stage: str, reason: str, *, topic: str, partition: int, offset: int
) -> list[tuple[str, str | bytes | None]]:
    """The value-free reason headers of a dead-lettered record."""
    return [
        (envelope.H_ERROR_CODE, code.encode()),
        (envelope.H_ERROR_STAGE, stage.encode()),
        (envelope.H_ERROR_REASON, reason.encode()),
        (envelope.H_ORIGIN_TOPIC, topic.encode()),
        (envelope.H_ORIGIN_PARTITION, str(partition).encode()),
        (envelope.H_ORIGIN_OFFSET, str(offset).encode()),
    ]
