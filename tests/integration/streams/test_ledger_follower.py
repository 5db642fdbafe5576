"""The batch stages' consent ledger follower: a record acknowledged before `as_of` is folded
once `wait_caught_up(as_of)` returns, for every partition, and the follower is shared by the
stages of a process."""

from __future__ import annotations

import time

import orjson
from confluent_kafka import Producer

from caremesh import envelope, topics
from caremesh.consent.model import ERASURE_ID
from caremesh.settings import Settings
from caremesh.streams.ledger import LedgerFollower, ledger_follower
from tests.support.kafka import Namespace
from tests.unit.consent.consent_builders import provision, r4_consent


def _produce(namespace: Namespace, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(envelope.producer_config(namespace.kafka))
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
    settings.kafka.bootstrap_servers = namespace.kafka
    settings.kafka.topic_prefix = namespace.prefix
    first = ledger_follower(settings)
    try:
        assert ledger_follower(settings) is first
        first.wait_caught_up(timeout=30)
    finally:
        first.stop()
