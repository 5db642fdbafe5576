"""The batch stages' consent ledger follower: a record acknowledged before `as_of` is folded
once `wait_caught_up(as_of)` returns, for every partition, and the follower is shared by the
stages of a process."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Message, Producer

from caremesh import topics
from caremesh.consent.model import ERASURE_ID
from caremesh.errors import ConsentNotReadyError
from caremesh.kafka import config as kafka_config
from caremesh.settings import Settings
from caremesh.tables.consent_ledger import LedgerFollower, ledger_follower
from tests.support.kafka import Namespace
from tests.support.settings import evolve
from tests.unit.consent.consent_builders import provision, r4_consent


def _produce(namespace: Namespace, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(kafka_config.producer_config(namespace.kafka))
    for key, value in records:
        producer.produce(namespace.topic(topics.CONSENT_EVENTS), key=key, value=value)
    assert producer.flush(30) == 0


def test_read_your_writes_across_partitions_and_erasure(namespace: Namespace) -> None:
    patients = [f"ins-follower-{i}" for i in range(12)]  # spread over the partitions
    consent = orjson.dumps(r4_consent("c-1", provision("permit")))
    _produce(namespace, [(p.encode(), consent) for p in patients[:6]])
    follower = LedgerFollower(namespace.kafka, namespace.topic(topics.CONSENT_EVENTS))
    follower.start()
    try:
        follower.wait_caught_up(as_of=time.time(), timeout=30)
        assert all(len(follower.consents(p)) == 1 for p in patients[:6])
        assert follower.consents(patients[7]) == ()
        # written while the follower runs: visible as soon as a wait as of "after" returns
        erasure = orjson.dumps({"caremeshEvent": "erasure", "at": "2026-01-01T00:00:00Z"})
        _produce(
            namespace,
            [(p.encode(), consent) for p in patients[6:]] + [(patients[0].encode(), erasure)],
        )
        follower.wait_caught_up(as_of=time.time(), timeout=30)
        assert all(len(follower.consents(p)) == 1 for p in patients[6:])
        assert any(c.id == ERASURE_ID for c in follower.consents(patients[0]))
        assert follower.ready
        assert follower.applied == 13
    finally:
        follower.stop()


def test_one_follower_per_process_and_topic(namespace: Namespace) -> None:
    settings = Settings()
    settings = evolve(
        settings,
        kafka__bootstrap_servers=namespace.kafka,
        kafka__topic_prefix=namespace.prefix,
    )
    first = ledger_follower(settings.kafka)
    try:
        assert ledger_follower(settings.kafka) is first
        first.wait_caught_up(timeout=30)
    finally:
        first.stop()


class _Stallable:
    """A real consumer whose fetches stop, for the follower, once `stalled` is set: `poll` and
    `consume` then bring nothing, as a stalled librdkafka fetcher does."""

    def __init__(self, inner: Consumer, stalled: threading.Event) -> None:
        self.inner = inner
        self.stalled = stalled

    def poll(self, timeout: float) -> Message | None:
        if self.stalled.is_set():
            time.sleep(timeout)
            return None
        return self.inner.poll(timeout)

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        return [] if self.stalled.is_set() else self.inner.consume(num_messages, timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _FirstConsumerStalls(LedgerFollower):
    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic)
        self.stalled = threading.Event()
        self.consumers: list[Consumer] = []

    def _new_consumer(self) -> Consumer:
        consumer = super()._new_consumer()
        self.consumers.append(consumer)
        return _Stallable(consumer, self.stalled) if len(self.consumers) == 1 else consumer  # type: ignore[return-value]


def test_a_follower_whose_fetches_stopped_gets_a_new_consumer_and_folds_each_record_once(
    namespace: Namespace,
) -> None:
    """librdkafka's fetches were seen to stop for good after a broker pause. A wait that runs
    out while the fold stood still makes the follower replace its consumer, from where the fold
    stands: the next wait returns, and no record is folded twice or skipped."""
    patients = [f"ins-stalled-{i}" for i in range(9)]
    consent = orjson.dumps(r4_consent("c-1", provision("permit")))
    _produce(namespace, [(p.encode(), consent) for p in patients[:3]])
    follower = _FirstConsumerStalls(namespace.kafka, namespace.topic(topics.CONSENT_EVENTS))
    follower.start()
    try:
        follower.wait_caught_up(as_of=time.time(), timeout=30)
        assert follower.applied == 3
        follower.stalled.set()
        time.sleep(0.5)  # a poll begun before the stall (0.2 s at most) has returned
        _produce(namespace, [(p.encode(), consent) for p in patients[3:]])
        with pytest.raises(ConsentNotReadyError):
            follower.wait_caught_up(as_of=time.time(), timeout=3)
        assert follower.applied == 3  # nothing decided on a state that stood still
        follower.wait_caught_up(as_of=time.time(), timeout=30)
        assert len(follower.consumers) == 2
        assert follower.renewals == 1
        assert follower.applied == 9
        assert all(len(follower.consents(p)) == 1 for p in patients)
        assert follower.ready
    finally:
        follower.stop()


def test_wait_folded_waits_for_the_record_itself_not_a_snapshot_as_of_its_timestamp(
    namespace: Namespace,
) -> None:
    """A consent record's timestamp is set by its producer before the broker appends it, so an
    end-offset snapshot taken "as of" that timestamp can miss it (the research stage's
    withdrawal race). `wait_folded` returns only once that very record is folded. The fetches
    are held still while the record is written, so that "not folded yet" is certain."""
    topic = namespace.topic(topics.CONSENT_EVENTS)
    consent = orjson.dumps(r4_consent("c-1", provision("deny")))
    follower = _FirstConsumerStalls(namespace.kafka, topic)
    with pytest.raises(ConsentNotReadyError):
        follower.wait_folded(0, 0, timeout=1)  # not started
    follower.start()
    try:
        follower.wait_caught_up(as_of=time.time(), timeout=30)
        snapshot_taken = time.time()
        follower.stalled.set()
        time.sleep(0.5)  # a poll begun before the stall (0.2 s at most) has returned
        # a record stamped before the snapshot, appended after it
        delivered: list[Message] = []
        producer = Producer(kafka_config.producer_config(namespace.kafka))
        producer.produce(
            topic,
            key=b"ins-late-append",
            value=consent,
            timestamp=int((snapshot_taken - 1) * 1000),
            on_delivery=lambda err, msg: delivered.append(msg),
        )
        assert producer.flush(30) == 0
        (record,) = delivered
        follower.wait_caught_up(as_of=snapshot_taken - 1, timeout=30)  # the snapshot will do
        assert follower.consents("ins-late-append") == ()
        with pytest.raises(ConsentNotReadyError):
            follower.wait_folded(record.partition(), record.offset(), timeout=2)
        follower.wait_folded(record.partition(), record.offset(), timeout=30)  # new consumer
        assert len(follower.consents("ins-late-append")) == 1
        with pytest.raises(ConsentNotReadyError):  # a record not written yet
            follower.wait_folded(record.partition(), record.offset() + 1, timeout=1)
    finally:
        follower.stop()
