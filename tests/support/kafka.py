"""Test support: a private topic namespace per test, and caremesh processes to run and watch."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, Message, Producer

from caremesh.kafka import config as kafka_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Namespace:
    """A test's own topic prefix, with helpers to produce to and read from its topics."""

    kafka: str
    prefix: str
    partitions: int
    orgs: list[str] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)
    _producer: Producer | None = field(default=None, init=False, repr=False)

    def topic(self, name: str) -> str:
        return self.prefix + name

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a caremesh process working in this namespace."""
        return dict(
            os.environ,
            CAREMESH_KAFKA__BOOTSTRAP_SERVERS=self.kafka,
            CAREMESH_KAFKA__TOPIC_PREFIX=self.prefix,
            CAREMESH_KAFKA__PARTITIONS=str(self.partitions),
            CAREMESH_WORKER__APP_ID=self.prefix + "app",
            **extra,
        )

    def produce(
        self, name: str, records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
    ) -> None:
        """Write records and wait until the broker has them all. One producer serves the whole
        test: a new idempotent producer spends about 0.5 s getting its producer id."""
        if self._producer is None:
            self._producer = Producer(kafka_config.producer_config(self.kafka))
        producer = self._producer
        for key, value, headers in records:
            producer.produce(self.topic(name), key=key, value=value, headers=headers)
            producer.poll(0)
        assert producer.flush(60) == 0

    def consume(self, name: str, count: int, timeout: float = 60.0) -> list[Message]:
        """Read `count` records from the start of a topic (fewer if `timeout` passes)."""
        consumer = Consumer(kafka_config.consumer_config(self.kafka, f"reader-{uuid.uuid4().hex}"))
        consumer.subscribe([self.topic(name)])
        out: list[Message] = []
        deadline = time.monotonic() + timeout
        try:
            while len(out) < count and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    out.append(msg)
        finally:
            consumer.close()
        return out

    def consume_all(self, name: str, settle: float = 3.0, timeout: float = 60.0) -> list[Message]:
        """Read a topic until no new record came for `settle` seconds."""
        consumer = Consumer(kafka_config.consumer_config(self.kafka, f"reader-{uuid.uuid4().hex}"))
        consumer.subscribe([self.topic(name)])
        out: list[Message] = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        try:
            while time.monotonic() < deadline and time.monotonic() - last < settle:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    out.append(msg)
                    last = time.monotonic()
        finally:
            consumer.close()
        return out


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


SPAWNED: pytest.StashKey[list[Proc]] = pytest.StashKey()
"""The processes a test started (the `spawn` fixture keeps them on the test's stash), so that a
failed test's report shows how each one ended (tests/conftest.py)."""


def worker_ready(proc: Proc, port: int, timeout: float = 90.0) -> None:
    """Wait until a worker's /metrics answers and its partitions are assigned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            pytest.fail(f"worker exited:\n{proc.log()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            if r.status_code == 200 and r.json().get("ready"):
                return
        time.sleep(0.5)
    pytest.fail(f"worker not ready:\n{proc.log()[-3000:]}")


@contextlib.contextmanager
def make_namespace(
    kafka: str, partitions: int = 3, replication_factor: int | None = 1
) -> Iterator[Namespace]:
    """Every catalogue topic (orgs org-a..c, studies study-a/b) under a unique prefix; with
    `replication_factor` None, replicated as the cluster's broker count asks (3 from 3)."""
    from confluent_kafka.admin import AdminClient

    from caremesh import topics as catalogue
    from caremesh.kafka import admin as kafka_admin

    ns = Namespace(kafka, f"t{uuid.uuid4().hex[:10]}.", partitions=partitions)
    specs = catalogue.catalogue(["org-a", "org-b", "org-c"], [("study-a", 30), ("study-b", 30)])
    kafka_admin.ensure_topics(
        kafka, specs, partitions=partitions, replication_factor=replication_factor, prefix=ns.prefix
    )
    try:
        yield ns
    finally:
        if ns._producer is not None:
            ns._producer.flush(30)
        admin = AdminClient({"bootstrap.servers": kafka})
        names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(ns.prefix)]
        if names:
            for fut in admin.delete_topics(names, operation_timeout=30).values():
                with contextlib.suppress(Exception):
                    fut.result(timeout=30)
