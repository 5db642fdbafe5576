"""The foundation against the real broker: headers, the catalogue, partitioner agreement."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from caremesh import envelope, topics
from caremesh.envelope import Envelope
from caremesh.kafka import admin as kafka_admin
from caremesh.kafka import config as kafka_config

pytestmark = pytest.mark.kafka


def test_round_trip_keeps_key_value_and_headers(kafka: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic("roundtrip", partitions=3)
    producer = Producer(kafka_config.producer_config(kafka))
    env = Envelope(
        "ce-1",
        "urn:caremesh:test",
        envelope.fhir_event_type("Observation"),
        extra={envelope.H_FHIR_RELEASE: "R5"},
    )
    acked: list[object] = []
    producer.produce(
        topic,
        key=b"patient-key-1",
        value=b'{"resourceType":"Observation"}',
        headers=env.headers(),
        on_delivery=lambda err, msg: acked.append(err),
    )
    assert producer.flush(30) == 0
    assert acked == [None]

    consumer = Consumer(kafka_config.consumer_config(kafka, f"g-{uuid.uuid4().hex}"))
    consumer.subscribe([topic])
    msg = None
    deadline = time.monotonic() + 30
    while msg is None and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
    consumer.close()
    assert msg is not None
    assert msg.error() is None
    assert msg.key() == b"patient-key-1"
    assert msg.value() == b'{"resourceType":"Observation"}'
    assert Envelope.from_headers(msg.headers()) == env


def test_topics_create_twice_gives_the_same_topics(kafka: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    specs = topics.catalogue(["org-a"], [("study-x", 30)])
    first = kafka_admin.ensure_topics(
        kafka, specs, partitions=4, replication_factor=1, prefix=prefix
    )
    second = kafka_admin.ensure_topics(
        kafka, specs, partitions=4, replication_factor=1, prefix=prefix
    )
    admin = AdminClient({"bootstrap.servers": kafka})
    try:
        assert {o.action for o in first} == {"created"}
        assert {o.action for o in second} == {"verified"}
        assert (
            {o.name for o in first} == {o.name for o in second} == {prefix + s.name for s in specs}
        )
        meta = admin.list_topics(timeout=10).topics
        assert all(len(meta[prefix + s.name].partitions) == (s.partitions or 4) for s in specs)
        assert any(s.partitions is None for s in specs)  # patient-keyed topics take the setting
    finally:
        for fut in admin.delete_topics([prefix + s.name for s in specs]).values():
            fut.result(timeout=30)


def test_confluent_and_aiokafka_put_each_key_in_the_same_partition(
    kafka: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic("partitioner", partitions=12)
    keys = [f"urn:oid:1.2.250.1.213.1.4.8|{n:013d}".encode() for n in range(10_000)]

    confluent_parts: dict[bytes, int] = {}

    def on_delivery(err: object, msg: object) -> None:
        assert err is None
        confluent_parts[msg.key()] = msg.partition()  # type: ignore[attr-defined]

    producer = Producer(kafka_config.producer_config(kafka))
    for key in keys:
        producer.produce(topic, key=key, value=b"x", on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(60) == 0

    async def with_aiokafka() -> dict[bytes, int]:
        p = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", enable_idempotence=True)
        await p.start()
        try:
            futures = [await p.send(topic, key=k, value=b"y") for k in keys]
            metas = await asyncio.gather(*futures)
        finally:
            await p.stop()
        return {k: m.partition for k, m in zip(keys, metas, strict=True)}

    aiokafka_parts = asyncio.run(with_aiokafka())
    assert len(confluent_parts) == 10_000
    mismatches = [k for k in keys if confluent_parts[k] != aiokafka_parts[k]]
    assert mismatches == []
    assert len(set(confluent_parts.values())) == 12


def _caremesh(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caremesh.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _running(pid: int) -> bool:
    """True while the process exists and is not a zombie awaiting its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(") ", 1)[1][:1] != "Z"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_kafka_up_topics_down_twice_leaves_no_process(kafka: str, tmp_path: Path) -> None:
    port, cport = _free_port(), _free_port()
    env = dict(
        os.environ,
        CAREMESH_KAFKA__LOCAL_PORT=str(port),
        CAREMESH_KAFKA__LOCAL_CONTROLLER_PORT=str(cport),
        CAREMESH_KAFKA__LOCAL_DATA_DIR=str(tmp_path / "kafka"),
        CAREMESH_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
    )
    for _ in range(2):
        up = _caremesh("kafka", "up", env=env)
        assert up.returncode == 0, up.stderr
        pid = int((tmp_path / "kafka" / "broker.pid").read_text())
        again = _caremesh("kafka", "up", env=env)
        assert again.returncode == 0
        assert "already running" in again.stderr
        created = _caremesh("topics", "create", env=env)
        assert created.returncode == 0, created.stderr
        assert "clinical.fhir.v1" in created.stdout
        down = _caremesh("kafka", "down", env=env)
        assert down.returncode == 0, down.stderr
        assert not _running(pid)
        assert _caremesh("kafka", "status", env=env).returncode == 3


def test_worker_serves_prometheus_metrics(kafka: str, unique: Callable[[str], str]) -> None:
    port = _free_port()
    env = dict(
        os.environ,
        CAREMESH_WORKER__APP_ID=unique("worker"),
        CAREMESH_WORKER__WEB_PORT=str(port),
        CAREMESH_KAFKA__BOOTSTRAP_SERVERS=kafka,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "caremesh.cli.main", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        body = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                if r.status_code == 200:
                    body = r.text
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        assert "caremesh_messages_in_total" in body
        assert r.headers["content-type"].startswith("text/plain")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
