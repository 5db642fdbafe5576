"""The generated ACLs on a secured broker (SASL/SCRAM, deny by default), proved with real clients.

Uses the session's secured broker (`conftest.secured_broker`: free ports, a temporary directory,
never the shared plaintext one, formatted with the SCRAM users), applies `caremesh acl apply`'s
rules, and shows with real clients who can read what.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from caremesh.kafka.admin import ensure_topics
from caremesh.kafka.config import aiokafka_security, confluent_security
from caremesh.security.apply import apply_acls
from caremesh.security.commands import configured_catalogue, platform
from caremesh.settings import KafkaSettings, OrganisationSettings, Settings, StudySettings
from tests.integration.security.conftest import ADMIN, USERS, SecuredBroker

pytestmark = pytest.mark.kafka


@dataclass
class Secured:
    settings: Settings
    bootstrap: str
    broker: SecuredBroker

    def kafka_as(self, user: str, password: str) -> KafkaSettings:
        return self.broker.kafka_as(user, password)

    def conf(self, user: str, password: str) -> dict[str, str]:
        return {
            "bootstrap.servers": self.bootstrap,
            **confluent_security(self.kafka_as(user, password)),
        }


@pytest.fixture(scope="module")
def secured(secured_broker: SecuredBroker) -> Secured:
    settings = Settings(
        kafka=secured_broker.admin(),
        organisations=[
            OrganisationSettings(id="hosp-a", fhir_endpoint="http://127.0.0.1:9/fhir"),
            OrganisationSettings(id="clinic-b"),
        ],
        studies=[StudySettings(id="hf"), StudySettings(id="copd")],
    )
    return Secured(settings, secured_broker.bootstrap, secured_broker)


def _wait_for_acls(s: Secured) -> None:
    # ACLs reach the authorizer through the metadata log; wait until the study sees its topic.
    admin = AdminClient(s.conf("study-hf", USERS["study-hf"]))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=10)
        if "research.hf.v1" in meta.topics:
            return
        time.sleep(0.5)
    pytest.fail("the study never saw its topic")


@pytest.fixture(scope="module")
def applied(secured: Secured) -> Secured:
    admin_conf = secured.conf(*ADMIN)
    outcomes = ensure_topics(
        secured.bootstrap,
        configured_catalogue(secured.settings),
        partitions=2,
        replication_factor=1,
        client_config=confluent_security(secured.kafka_as(*ADMIN)),
    )
    assert {o.action for o in outcomes} == {"created"}
    found, rules = platform(secured.settings)
    managed = [p.user for p in found]
    first = apply_acls(admin_conf, rules, managed)
    # group rules of shared group names may exist already (another secured test's platform)
    assert len(first.create) + len(first.present) == len(rules)
    # The broker learns the new ACLs from the metadata log; a second apply then has nothing to do.
    deadline = time.monotonic() + 30
    while (again := apply_acls(admin_conf, rules, managed, dry_run=True)).create:
        assert time.monotonic() < deadline, f"{len(again.create)} ACLs never became visible"
        time.sleep(0.5)
    again = apply_acls(admin_conf, rules, managed)
    assert again.create == ()
    assert len(again.present) == len(rules)
    producer = Producer({**admin_conf, "enable.idempotence": True, "acks": "all"})
    for topic in (
        "research.hf.v1",
        "research.copd.v1",
        "outbox.hosp-a.v1",
        "outbox.clinic-b.v1",
        "clinical.fhir.v1",
    ):
        producer.produce(topic, key=b"k", value=f"synthetic {topic}".encode())
    assert producer.flush(30) == 0
    _wait_for_acls(secured)
    return secured


def _read(s: Secured, user: str, topic: str) -> bytes | int:
    """The first record's value, or the error code the broker answered with."""
    consumer = Consumer(
        {
            **s.conf(user, USERS[user]),
            "group.id": f"{user}.itest",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is None:
                return msg.value() or b""
            if error.code() != KafkaError._PARTITION_EOF:
                return int(error.code())
        pytest.fail(f"{user} got neither a record nor an error from {topic}")
    finally:
        consumer.close()


def test_admin_creates_topics_and_holds_every_catalogue_topic(applied: Secured) -> None:
    meta = AdminClient(applied.conf(*ADMIN)).list_topics(timeout=10)
    assert {s.name for s in configured_catalogue(applied.settings)} <= set(meta.topics)


def test_study_reads_its_own_topic_only(applied: Secured) -> None:
    assert _read(applied, "study-hf", "research.hf.v1") == b"synthetic research.hf.v1"
    assert _read(applied, "study-hf", "research.copd.v1") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _read(applied, "study-hf", "clinical.fhir.v1") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _read(applied, "study-copd", "research.copd.v1") == b"synthetic research.copd.v1"


def test_organisation_reads_its_own_outbox_only(applied: Secured) -> None:
    assert _read(applied, "org-hosp-a", "outbox.hosp-a.v1") == b"synthetic outbox.hosp-a.v1"
    denied = _read(applied, "org-hosp-a", "outbox.clinic-b.v1")
    assert denied == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _read(applied, "org-clinic-b", "outbox.clinic-b.v1") == b"synthetic outbox.clinic-b.v1"


def test_study_cannot_write_or_alter(applied: Secured) -> None:
    producer = Producer(
        {**applied.conf("study-hf", USERS["study-hf"]), "message.timeout.ms": 10000}
    )
    errors: list[KafkaError] = []
    producer.produce(
        "research.hf.v1", value=b"forged", on_delivery=lambda err, _msg: errors.append(err)
    )
    producer.flush(15)
    assert errors
    assert errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    from confluent_kafka.admin import NewTopic

    admin = AdminClient(applied.conf("study-hf", USERS["study-hf"]))
    future = admin.create_topics([NewTopic("research.forged.v1", 1, 1)])["research.forged.v1"]
    with pytest.raises(KafkaException) as info:
        future.result(timeout=30)
    assert info.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_unauthenticated_and_wrong_password_clients_are_refused(applied: Secured) -> None:
    anonymous = AdminClient({"bootstrap.servers": applied.bootstrap, "log_level": 0})
    with pytest.raises(KafkaException):
        anonymous.list_topics(timeout=5)
    wrong = AdminClient({**applied.conf("study-hf", "not-the-password"), "log_level": 0})
    with pytest.raises(KafkaException):
        wrong.list_topics(timeout=5)


async def test_aiokafka_connects_with_the_same_settings(applied: Secured) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=applied.bootstrap,
        enable_auto_commit=False,
        **aiokafka_security(applied.kafka_as("study-hf", USERS["study-hf"])),
    )
    await consumer.start()
    try:
        tp = TopicPartition("research.hf.v1", 0)
        consumer.assign([tp, TopicPartition("research.hf.v1", 1)])
        await consumer.seek_to_beginning()
        batches = await consumer.getmany(timeout_ms=10_000)
        values = [m.value for records in batches.values() for m in records]
        assert values == [b"synthetic research.hf.v1"]
    finally:
        await consumer.stop()


def test_broker_config_holds_no_plaintext_listener(applied: Secured) -> None:
    config = Path(applied.settings.kafka.local_data_dir / "server.properties")
    text = config.read_text()
    assert "PLAINTEXT://" not in text.replace("SASL_PLAINTEXT", "")
    assert config.stat().st_mode & 0o077 == 0
