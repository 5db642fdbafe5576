"""`caremesh org add` and `org remove` on the secured broker: idempotent admission, revocation.

After `org add` the new organisation's principal (password read from the 0600 secret file the
command wrote) reads its own outbox and nothing else, and the share stage's principal may write
to it; a second `org add` changes nothing. After `org remove` the principal is refused, and its
outbox topic (the audit trail) is still there. Both write the registration to organisations.v1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from caremesh.tables.organisations import read_registrations
from tests.integration.security.conftest import ADMIN, SecuredBroker

pytestmark = pytest.mark.kafka


def _caremesh(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "caremesh.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _first_read(conf: dict[str, object], group: str, topic: str, timeout: float = 30) -> object:
    """The first record's value, or the error code the broker answered with."""
    consumer = Consumer(
        {**conf, "group.id": group, "auto.offset.reset": "earliest", "log_level": 0}
    )
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is None:
                return msg.value()
            if error.code() != KafkaError._PARTITION_EOF:
                return error.code()
        return None
    finally:
        consumer.close()


def test_org_add_is_idempotent_and_org_remove_revokes_access(
    secured_broker: SecuredBroker, tmp_path: Path
) -> None:
    broker = secured_broker
    prefix = f"o{uuid.uuid4().hex[:6]}."
    env = broker.env(
        ADMIN[0],
        ADMIN[1],
        CAREMESH_KAFKA__TOPIC_PREFIX=prefix,
        CAREMESH_KAFKA__PARTITIONS="2",
        CAREMESH_STATE_DIR=str(tmp_path / "state"),
        CAREMESH_ORGANISATIONS=json.dumps([{"id": "hosp-old"}]),
    )
    _caremesh(env, "topics", "create")
    args = ["org", "add", "clinic-new", "--territory", "north", "--endpoint", "http://127.0.0.1:9"]
    first = _caremesh(env, *args)
    secret = tmp_path / "state" / "secrets" / "org-clinic-new.password"
    password = secret.read_text().strip()
    assert secret.stat().st_mode & 0o777 == 0o600
    assert str(secret) in first
    assert password not in first
    registry_topic = f"{prefix}organisations.v1"
    registry = read_registrations(broker.admin(), registry_topic)
    assert [(r.id, r.territory, r.status) for r in registry.values()] == [
        ("clinic-new", "north", "active")
    ]

    outbox = f"{prefix}outbox.clinic-new.v1"
    admin_conf = broker.conf(*ADMIN)
    assert outbox in AdminClient(admin_conf).list_topics(timeout=10).topics
    # the share stage's principal may write to the new outbox
    share = Producer({**broker.conf("caremesh-share"), "message.timeout.ms": 20000})
    share.produce(outbox, key=b"p", value=b"synthetic for clinic-new")
    assert share.flush(30) == 0

    org_conf = broker.conf("org-clinic-new", password)
    group = "org-clinic-new.itest"
    deadline = time.monotonic() + 30
    while (got := _first_read(org_conf, group, outbox, timeout=10)) != b"synthetic for clinic-new":
        assert time.monotonic() < deadline, f"the new organisation cannot read its outbox: {got}"
    other = _first_read(org_conf, group, f"{prefix}outbox.hosp-old.v1")
    assert other == KafkaError.TOPIC_AUTHORIZATION_FAILED

    again = _caremesh(env, *args)
    assert "0 ACLs created" in again
    assert "credentials kept" in again
    assert secret.read_text().strip() == password

    removed = _caremesh(env, "org", "remove", "clinic-new")
    assert "ACLs deleted" in removed
    assert not secret.exists()
    deadline = time.monotonic() + 30
    while True:
        try:
            AdminClient({**org_conf, "log_level": 0}).list_topics(timeout=5)
        except KafkaException:
            break  # authentication refused
        assert time.monotonic() < deadline, "the removed organisation can still connect"
        time.sleep(0.5)
    assert outbox in AdminClient(admin_conf).list_topics(timeout=10).topics
    assert read_registrations(broker.admin(), registry_topic)["clinic-new"].status == "removed"
