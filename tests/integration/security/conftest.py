"""One secured broker (SASL/SCRAM, deny by default) per test session, shared by the secured tests.

It runs on free ports in a temporary directory, never the shared plaintext broker, and is
stopped by its pid at the end of the session. Every SCRAM user a secured test connects as is
created when its storage is formatted; the tests apply their ACLs with `caremesh acl apply`'s
code, each in a topic namespace of its own.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pydantic import SecretStr

from caremesh.kafka.config import confluent_config
from caremesh.kafka.local import LocalKafka
from caremesh.settings import KafkaSettings

ADMIN = ("caremesh-admin", "admin-pass-0001")
USERS = {
    # test_secured_broker: studies and organisations of the unprefixed platform
    "study-hf": "study-hf-pass-01",
    "study-copd": "study-copd-pass-1",
    "org-hosp-a": "org-hosp-a-pass-1",
    "org-clinic-b": "org-clinic-b-pass",
    # test_secured_pipeline: each process as its own component principal
    "caremesh-ingest-api": "ingest-api-pass-1",
    "caremesh-validate": "validate-pass-001",
    "caremesh-share": "share-pass-000001",
    "caremesh-delivery": "delivery-pass-001",
    "caremesh-consent-api": "consent-api-pass1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class SecuredBroker:
    """The session's secured broker: where it listens and the admin's settings."""

    kafka: KafkaSettings
    bootstrap: str

    def kafka_as(self, user: str, password: str | None = None, **more: object) -> KafkaSettings:
        """Client settings of one principal (password from `USERS` unless given)."""
        secret = password if password is not None else USERS[user]
        return self.kafka.model_copy(
            update={
                "security_protocol": "SASL_PLAINTEXT",
                "username": user,
                "password": SecretStr(secret),
                **more,
            }
        )

    def admin(self, **more: object) -> KafkaSettings:
        return self.kafka_as(ADMIN[0], ADMIN[1], **more)

    def conf(self, user: str, password: str | None = None) -> dict[str, object]:
        return confluent_config(self.kafka_as(user, password))

    def env(self, user: str, password: str | None = None, **extra: str) -> dict[str, str]:
        """Environment of a caremesh process connecting as `user`."""
        secret = password if password is not None else USERS.get(user, ADMIN[1])
        return dict(
            os.environ,
            CAREMESH_KAFKA__BOOTSTRAP_SERVERS=self.bootstrap,
            CAREMESH_KAFKA__SECURITY_PROTOCOL="SASL_PLAINTEXT",
            CAREMESH_KAFKA__SASL_MECHANISM="SCRAM-SHA-512",
            CAREMESH_KAFKA__USERNAME=user,
            CAREMESH_KAFKA__PASSWORD=secret,
            **extra,
        )


@pytest.fixture(scope="session")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """A secured single-node broker of this session (java and the Kafka jars are needed)."""
    if not shutil.which("java") or not LocalKafka(KafkaSettings()).jars_present():
        message = "java and the Kafka jars (caremesh kafka fetch) are needed"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    kafka = KafkaSettings(
        local_port=free_port(),
        local_controller_port=free_port(),
        local_data_dir=tmp_path_factory.mktemp("secured-kafka"),
        local_secured=True,
        local_heap="512m",
        username=ADMIN[0],
        password=SecretStr(ADMIN[1]),
        local_scram_users={u: SecretStr(p) for u, p in USERS.items()},
        partitions=2,
    )
    broker = LocalKafka(kafka)
    try:
        status = broker.up(wait=120)
        kafka = kafka.model_copy(update={"bootstrap_servers": status.bootstrap})
        yield SecuredBroker(kafka, status.bootstrap)
    finally:
        broker.down()
