"""The secured profile on the local three-node cluster: the nodes authenticate to each other
(SASL/SCRAM between brokers, SASL/PLAIN to the controllers), topics get 3 replicas and
min.insync.replicas 2, anonymous clients are refused, and an authenticated idempotent producer
keeps writing with one node killed."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from pydantic import SecretStr

from caremesh import topics as catalogue
from caremesh.errors import LocalKafkaError
from caremesh.kafka import config as kafka_config
from caremesh.kafka.admin import ensure_topics
from caremesh.kafka.local_cluster import LocalCluster
from caremesh.settings import KafkaSettings
from tests.integration.security.conftest import ADMIN
from tests.support.cluster import Cluster, free_port_block

pytestmark = [pytest.mark.kafka]


@pytest.fixture(scope="module")
def secured_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Cluster, KafkaSettings]]:
    kafka = KafkaSettings(
        local_nodes=3,
        local_port=free_port_block(6),
        local_data_dir=tmp_path_factory.mktemp("secured-cluster"),
        local_secured=True,
        local_heap="384m",
        username=ADMIN[0],
        password=SecretStr(ADMIN[1]),
        security_protocol="SASL_PLAINTEXT",
        partitions=3,
    )
    local = LocalCluster(kafka)
    try:
        local.up(wait=150)
    except LocalKafkaError as exc:
        local.down()
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"the secured cluster could not start: {exc}")
        pytest.skip(f"the secured cluster could not start: {exc}")
    try:
        yield (
            Cluster(local, local.bootstrap),
            kafka.model_copy(update={"bootstrap_servers": local.bootstrap}),
        )
    finally:
        local.down()


def test_secured_cluster_replicates_refuses_anonymous_and_survives_a_node(
    secured_cluster: tuple[Cluster, KafkaSettings],
) -> None:
    cluster, kafka = secured_cluster
    prefix = f"s{uuid.uuid4().hex[:8]}."
    security = kafka_config.confluent_security(kafka)
    spec = next(s for s in catalogue.catalogue([], []) if s.name == catalogue.INGEST_FHIR)
    ensure_topics(
        kafka.bootstrap_servers,
        [spec],
        partitions=3,
        replication_factor=None,
        prefix=prefix,
        client_config=security,
    )
    topic = prefix + spec.name
    admin = AdminClient(kafka_config.confluent_config(kafka))
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    assert len(admin.list_topics(timeout=10).brokers) == 3
    assert all(len(p.replicas) == 3 for p in meta.partitions.values())
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
    config = next(iter(described.values())).result()
    assert config["min.insync.replicas"].value == "2"

    anonymous = AdminClient({"bootstrap.servers": kafka.bootstrap_servers, "log_level": 0})
    with pytest.raises(KafkaException):
        anonymous.list_topics(timeout=3)

    victim = int(meta.partitions[0].leader)
    cluster.kill(victim)
    producer = Producer(kafka_config.producer_config(kafka, **{"message.timeout.ms": 60000}))
    failed: list[str] = []

    def report(err: object, _msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    for i in range(30):
        producer.produce(topic, key=f"k{i}".encode(), value=b"{}", on_delivery=report)
    assert producer.flush(90) == 0
    assert failed == []
    with contextlib.suppress(LocalKafkaError):
        cluster.start(victim)
