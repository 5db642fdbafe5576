"""Fixtures of the connector integration tests: a private topic namespace, servers, a reader."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from fastapi import FastAPI
from pydantic import SecretStr

from caremesh import topics
from caremesh.connectors.http.server import server_config
from caremesh.connectors.http_ingest import create_app
from caremesh.kafka import admin as kafka_admin
from caremesh.kafka.io import AsyncProducer
from caremesh.metrics import Metrics
from caremesh.settings import Settings, SourceSettings
from tests.support.settings import evolve

PARTITIONS = 3
HOSP_TOKEN = "tok-synth-hosp-5f1c2a"
LAB_TOKEN = "tok-synth-lab-90ab7d"
MAX_BODY = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_address() -> str:
    """A local address where nothing listens (a dead broker)."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def settings(kafka: str, unique: Callable[[str], str]) -> Iterator[Settings]:
    """Settings with two sources and every catalogue topic under a prefix of this test."""
    prefix = unique("conn") + "."
    cfg = Settings(
        sources=[
            SourceSettings(id="synth-hosp", token=SecretStr(HOSP_TOKEN)),
            SourceSettings(id="synth-lab", token=SecretStr(LAB_TOKEN), fhir_release="R4"),
        ],
    )
    cfg = evolve(
        cfg,
        kafka__bootstrap_servers=kafka,
        kafka__topic_prefix=prefix,
    )
    cfg = evolve(
        cfg,
        http_ingest__max_body_bytes=MAX_BODY,
    )
    cfg = evolve(
        cfg,
        mllp__port=free_port(),
        mllp__max_message_bytes=64 * 1024,
    )
    kafka_admin.ensure_topics(
        kafka, topics.catalogue(), partitions=PARTITIONS, replication_factor=1, prefix=prefix
    )
    yield cfg
    admin = AdminClient({"bootstrap.servers": kafka})
    names = [prefix + spec.name for spec in topics.catalogue()]
    for fut in admin.delete_topics(names, operation_timeout=30).values():
        with contextlib.suppress(Exception):  # best-effort clean-up
            fut.result(timeout=30)


@pytest.fixture
def producer(settings: Settings) -> Iterator[AsyncProducer]:
    prod = AsyncProducer(settings.kafka.bootstrap_servers)
    yield prod
    prod.close(timeout=10)


@dataclass
class RunningApi:
    url: str
    metrics: Metrics


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run `app` with a real uvicorn server in a thread; yields its base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = server_config(app, "127.0.0.1", port, lifespan="off")  # as the APIs run
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture
def api(settings: Settings, producer: AsyncProducer) -> Iterator[RunningApi]:
    metrics = Metrics()
    app = create_app(settings, producer, metrics)
    with serve(app) as url:
        yield RunningApi(url, metrics)


def read_topic(kafka: str, topic: str, expected: int, timeout: float = 30.0) -> list[Message]:
    """Every record of `topic`: waits for `expected` ones, then a moment for any extra one."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka,
            "group.id": f"t.read.{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if len(out) >= expected:
                settle_until = settle_until or time.monotonic() + 1.5
                if time.monotonic() > settle_until:
                    break
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                continue
            out.append(msg)
    finally:
        consumer.close()
    return out


def headers_of(msg: Message) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in (msg.headers() or [])}
