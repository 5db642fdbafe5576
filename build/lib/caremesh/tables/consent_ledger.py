"""Consent state in a worker: the whole consent ledger folded per patient, with read-your-writes.

Every process that decides reads all of `consent.events.v1` with its own group-less consumer,
so a decision is right whichever worker holds the patient's partition (DESIGN §5). A decision is
taken only once the state has caught up with the ledger *as of* the moment that matters: the
ledger's end offsets are read at a time at or after that moment, and the fold must have passed
them. So a withdrawal acknowledged by the consent API before a resource arrived always applies to
that resource, and nothing is decided during recovery (never a default permit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass

import orjson

from caremesh.consent import PatientConsents, apply, parse_event
from caremesh.consent.model import Consent
from caremesh.errors import ConsentNotReadyError, KafkaUnavailableError, RejectedInputError
from caremesh.kafka.client import (
    OFFSET_BEGINNING,
    AIOKafkaConsumer,
    Consumer,
    KafkaError,
    KafkaException,
)
from caremesh.kafka.client import AioTopicPartition as TopicPartition
from caremesh.kafka.client import TopicPartition as KafkaTopicPartition
from caremesh.kafka.config import KafkaTarget, confluent_config
from caremesh.kafka.reading import end_offsets, next_batch, open_from_beginning
from caremesh.settings import KafkaSettings
from caremesh.topics import CONSENT_EVENTS, LEDGER_OFFSETS_GROUP

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    taken_at: float  # epoch seconds, before the end offsets were asked for
    end_offsets: dict[TopicPartition, int]


class _LedgerFold:
    """consent.events.v1 folded into per-patient consent state."""

    def __init__(self, bootstrap_servers: KafkaTarget, topic: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.applied = 0
        self.invalid = 0
        self._state: dict[str, PatientConsents] = {}

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if not key or value is None:
            self.invalid += 1
            return
        patient = key.decode("utf-8", "replace")
        try:
            event = parse_event(orjson.loads(value))
        except (orjson.JSONDecodeError, RejectedInputError) as exc:
            self.invalid += 1
            code = getattr(exc, "code", "invalid-json")
            log.warning("consent ledger record skipped: %s", code)
            return
        self._state[patient] = apply(self._state.get(patient, PatientConsents()), event)
        self.applied += 1

    def consents(self, patient: str) -> tuple[Consent, ...]:
        """The patient's current consents (empty when none)."""
        state = self._state.get(patient)
        return state.consents if state is not None else ()

    def patients(self) -> int:
        """How many patients have consent state."""
        return len(self._state)


class ConsentLedger(_LedgerFold):
    """Folds consent.events.v1 into per-patient consent state and answers `wait_caught_up`."""

    def __init__(
        self, bootstrap_servers: KafkaTarget, topic: str, *, refresh_interval: float = 0.0
    ) -> None:
        super().__init__(bootstrap_servers, topic)
        self.refresh_interval = refresh_interval
        self._positions: dict[TopicPartition, int] = {}
        self._snapshot: _Snapshot | None = None
        self._refresh_lock = asyncio.Lock()
        self._progress = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self._offsets: Consumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Assign every partition of the ledger from its beginning and start folding."""
        try:
            consumer, tps = await open_from_beginning(self.bootstrap_servers, [self.topic])
        except KafkaUnavailableError as exc:
            raise ConsentNotReadyError(str(exc)) from None
        self._positions = dict.fromkeys(tps, 0)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="consent-ledger")
        log.info("consent ledger reader started on %d partitions", len(tps))

    async def stop(self) -> None:
        """Stop folding and close the consumer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        if self._offsets is not None:
            self._offsets.close()

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                for record in records:
                    self._apply(record.key, record.value)
            positions = {tp: await consumer.position(tp) for tp in self._positions}
            async with self._progress:
                self._positions = positions
                self._progress.notify_all()

    async def _refresh(self, as_of: float) -> _Snapshot:
        async with self._refresh_lock:
            snap = self._snapshot
            if snap is not None and snap.taken_at >= as_of:
                return snap
            assert self._consumer is not None
            taken_at = time.time()
            # Not through the folding consumer: its fetcher serialises the request behind a fetch
            # that waits up to fetch.max.wait on an idle ledger (500 ms per decision).
            ends = await asyncio.to_thread(self._watermarks, list(self._positions))
            snap = _Snapshot(taken_at, dict(ends))
            self._snapshot = snap
            return snap

    def _watermarks(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The ledger's end offsets; ConsentNotReadyError (transient: the caller retries) when
        the broker does not answer, e.g. after a pause, so no decision is taken without them."""
        if self._offsets is None:
            self._offsets = Consumer(
                confluent_config(self.bootstrap_servers, **{"group.id": LEDGER_OFFSETS_GROUP})
            )
        try:  # one request for every partition; no retry here, the caller retries
            ends = end_offsets(
                self._offsets, [KafkaTopicPartition(tp.topic, tp.partition) for tp in tps], 0
            )
            return {TopicPartition(t, p): end for (t, p), end in ends.items()}
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.name() if isinstance(error, KafkaError) else type(exc).__name__
            with contextlib.suppress(KafkaException):
                self._offsets.list_topics(self.topic, timeout=5)  # refresh a stale leader
            raise ConsentNotReadyError(f"consent ledger end offsets not known ({code})") from None

    def _caught_up(self, snap: _Snapshot) -> bool:
        return all(self._positions.get(tp, 0) >= end for tp, end in snap.end_offsets.items())

    async def wait_caught_up(self, as_of: float | None = None, timeout: float = 30.0) -> None:
        """Return once the state includes every ledger record written before `as_of` (epoch s).

        Raises ConsentNotReadyError (transient: the caller retries) after `timeout`.
        """
        if self._consumer is None:
            raise ConsentNotReadyError("consent ledger not started")
        as_of = time.time() if as_of is None else as_of
        snap = self._snapshot
        if snap is not None and snap.taken_at >= as_of and self._caught_up(snap):
            return
        if snap is None or snap.taken_at < as_of:
            # Batch refreshes: wait a little so concurrent callers share one ListOffsets request.
            delay = self.refresh_interval - (time.time() - (snap.taken_at if snap else 0.0))
            if delay > 0:
                await asyncio.sleep(delay)
            snap = await self._refresh(as_of)
        try:
            async with asyncio.timeout(timeout), self._progress:
                await self._progress.wait_for(lambda: self._caught_up(snap))
        except TimeoutError:
            raise ConsentNotReadyError("consent state did not catch up with the ledger") from None

    @property
    def ready(self) -> bool:
        """True when the last known end offsets have been folded (for /health)."""
        snap = self._snapshot
        return snap is not None and self._caught_up(snap)


class LedgerFollower(_LedgerFold):
    """The consent ledger folded in a thread of its own, for the batch stages (which wait for it
    once per batch, as of the batch's newest record, instead of once per record)."""

    def __init__(self, bootstrap_servers: KafkaTarget, topic: str) -> None:
        super().__init__(bootstrap_servers, topic)
        self._positions: dict[int, int] = {}
        self._snapshot: tuple[float, dict[int, int]] | None = None
        self._progress = threading.Condition()
        self._refresh_lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._offsets: Consumer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._renew = threading.Event()
        """Set when a wait ran out while the fold stood still: the folding thread then replaces
        its consumer (see `_renewed`)."""
        self.renewals = 0

    def start(self) -> None:
        """Assign every partition of the ledger from its beginning and fold it in a thread.

        Raises ConsentNotReadyError (transient) while the topic has no partitions."""
        if self._thread is not None:
            return
        consumer = self._new_consumer()
        deadline = time.monotonic() + 10  # a just-created topic's partitions, seen a bit later
        while True:
            try:
                meta = consumer.list_topics(self.topic, timeout=30).topics.get(self.topic)
            except KafkaException as exc:
                consumer.close()
                raise ConsentNotReadyError(f"consent ledger not readable ({_code(exc)})") from None
            if meta is not None and meta.error is None and meta.partitions:
                break
            if time.monotonic() > deadline:
                consumer.close()
                raise ConsentNotReadyError("consent ledger topic has no partitions yet")
            time.sleep(0.2)
        parts = sorted(meta.partitions)
        self._positions = dict.fromkeys(parts, 0)
        consumer.assign([KafkaTopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
        self._consumer = consumer
        self._thread = threading.Thread(target=self._run, name="consent-ledger", daemon=True)
        self._thread.start()
        log.info("consent ledger follower started on %d partitions", len(parts))

    def stop(self) -> None:
        """Stop folding and close the consumers."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for consumer in (self._consumer, self._offsets):
            if consumer is not None:
                with contextlib.suppress(Exception):
                    consumer.close()

    def _new_consumer(self) -> Consumer:
        return Consumer(
            confluent_config(
                self.bootstrap_servers,
                **{
                    "group.id": LEDGER_OFFSETS_GROUP,
                    "enable.auto.commit": False,
                    # a position below the log start (records gone) resumes at the start
                    "auto.offset.reset": "earliest",
                },
            )
        )

    def _renewed(self, consumer: Consumer) -> Consumer:
        """A new consumer in place of one whose fetches may have stopped for good (librdkafka's
        were seen to, after a broker pause), assigned where the fold stands: every record is
        folded once, none skipped."""
        self._renew.clear()
        self.renewals += 1
        log.warning("consent ledger follower: no progress; replacing its consumer")
        # close() may wait on the stalled connection: let it finish in the background.
        threading.Thread(target=consumer.close, name="close-consent-ledger", daemon=True).start()
        fresh = self._new_consumer()
        with self._progress:
            at = dict(self._positions)
        fresh.assign([KafkaTopicPartition(self.topic, p, offset) for p, offset in at.items()])
        self._consumer = fresh
        return fresh

    def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        tps = [KafkaTopicPartition(self.topic, p) for p in self._positions]
        while not self._stop.is_set():
            if self._renew.is_set():
                consumer = self._renewed(consumer)
            try:
                for msg in next_batch(consumer, 5000):
                    self._apply(msg.key(), msg.value())
                positions = {tp.partition: tp.offset for tp in consumer.position(tps)}
            except KafkaException as exc:  # the broker away: librdkafka reconnects by itself
                log.warning("consent ledger follower: %s", _code(exc))
                self._stop.wait(0.5)
                continue
            with self._progress:
                for part, offset in positions.items():
                    if offset >= 0:
                        self._positions[part] = offset
                self._progress.notify_all()

    def _caught_up(self, ends: dict[int, int]) -> bool:
        return all(self._positions.get(p, 0) >= end for p, end in ends.items())

    def _refresh(self, as_of: float) -> tuple[float, dict[int, int]]:
        with self._refresh_lock:
            snap = self._snapshot
            if snap is not None and snap[0] >= as_of:
                return snap  # another stage asked meanwhile
            if self._offsets is None:
                self._offsets = Consumer(
                    confluent_config(self.bootstrap_servers, **{"group.id": LEDGER_OFFSETS_GROUP})
                )
            taken_at = time.time()
            tps = [KafkaTopicPartition(self.topic, p) for p in self._positions]
            try:  # a leader being elected (a new topic, a failover) is waited for a little
                ends = {p: end for (_, p), end in end_offsets(self._offsets, tps, 10.0).items()}
            except KafkaException as exc:
                raise ConsentNotReadyError(
                    f"consent ledger end offsets not known ({_code(exc)})"
                ) from None
            snap = (taken_at, ends)
            self._snapshot = snap
            return snap

    def wait_caught_up(self, as_of: float | None = None, timeout: float = 30.0) -> None:
        """Return once the state includes every ledger record written before `as_of` (epoch s).

        Raises ConsentNotReadyError (transient: the caller retries) after `timeout`.
        """
        if self._thread is None:
            raise ConsentNotReadyError("consent ledger not started")
        as_of = time.time() if as_of is None else as_of
        snap = self._snapshot
        if snap is None or snap[0] < as_of:
            snap = self._refresh(as_of)
        self._wait_folded(snap[1], timeout)

    def wait_folded(self, partition: int, offset: int, timeout: float = 30.0) -> None:
        """Return once the ledger record at (`partition`, `offset`) has been folded.

        For a stage that reads the ledger's own records: a record's timestamp is set before the
        broker appends it, so an end-offset snapshot taken "as of" that time may miss it; its
        offset does not. Raises ConsentNotReadyError (transient: the caller retries)."""
        if self._thread is None:
            raise ConsentNotReadyError("consent ledger not started")
        self._wait_folded({partition: offset + 1}, timeout)

    def _wait_folded(self, ends: dict[int, int], timeout: float) -> None:
        """Wait until the fold has passed `ends`; ConsentNotReadyError after `timeout`, and a
        new consumer for the fold when not one record was folded meanwhile."""
        with self._progress:
            before = dict(self._positions)
            if not self._progress.wait_for(lambda: self._caught_up(ends), timeout):
                if self._positions == before:
                    self._renew.set()
                raise ConsentNotReadyError("consent state did not catch up with the ledger")

    @property
    def ready(self) -> bool:
        """True when the last known end offsets have been folded."""
        snap = self._snapshot
        return snap is not None and self._caught_up(snap[1])


def _code(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.name() if isinstance(error, KafkaError) else type(exc).__name__


_FOLLOWERS: dict[str, LedgerFollower] = {}
_FOLLOWERS_LOCK = threading.Lock()


def ledger_follower(kafka: KafkaSettings) -> LedgerFollower:
    """The process's consent ledger follower (shared by its stages), started on first call."""
    topic = kafka.topic_prefix + CONSENT_EVENTS
    with _FOLLOWERS_LOCK:
        follower = _FOLLOWERS.get(topic)
        if follower is None:
            follower = _FOLLOWERS[topic] = LedgerFollower(kafka, topic)
        follower.start()
        return follower
