"""Test support: a private three-node KRaft cluster (caremesh.kafka.local_cluster) on free ports.

`kafka_cluster` is a module fixture: three combined broker+controller nodes in a tmp dir, which
tests may SIGKILL and restart one at a time by pid, stopped at the end. When Java or the jars
are missing, or the cluster does not start, the tests are skipped on a developer machine and
fail under CI=true (as `tests/support/hapi.py` does for HAPI).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from caremesh.errors import LocalKafkaError
from caremesh.kafka.local_cluster import LocalCluster
from caremesh.settings import KafkaSettings
from tests.support.kafka import free_port

NODES = 3
RESERVED = range(19092, 19094)  # ports of other checkouts' brokers, never probed here


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(count: int, attempts: int = 50) -> int:
    """A base port such that `count` consecutive ports from it are free."""
    for _ in range(attempts):
        base = free_port()
        ports = range(base, base + count)
        clear = base + count <= 65535 and not set(ports) & {9092, 9093, *RESERVED}
        if clear and all(_free(p) for p in ports):
            return base
    raise LocalKafkaError(f"no block of {count} free ports found")


@dataclass
class Cluster:
    """A running private cluster: its bootstrap list and each node by broker id (1..3)."""

    local: LocalCluster
    bootstrap: str

    def pid(self, broker_id: int) -> int:
        return int(self.local.nodes[broker_id - 1].pid_file.read_text().strip())

    def kill(self, broker_id: int) -> float:
        """SIGKILL one node; returns the monotonic time of the signal, once it is gone."""
        pid = self.pid(broker_id)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        deadline = killed_at + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if _gone(pid):
                return killed_at
            time.sleep(0.05)
        raise AssertionError(f"broker {broker_id} survived SIGKILL")

    def stop(self, broker_id: int) -> None:
        """Stop one node cleanly (SIGTERM: controlled shutdown, leaders moved first)."""
        self.local.nodes[broker_id - 1].down(wait=60)

    def start(self, broker_id: int) -> None:
        """Restart one stopped node and wait until it answers."""
        self.local.start_node(broker_id - 1, wait=120)

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})

    def leader(self, topic: str, partition: int) -> int:
        """The broker id leading one partition (-1 while it has none)."""
        meta = self.admin().list_topics(topic, timeout=10).topics[topic]
        return int(meta.partitions[partition].leader)

    def in_sync(self) -> bool:
        """True when every partition of every topic has all its replicas in sync and a leader."""
        try:
            topics = self.admin().list_topics(timeout=10).topics.values()
        except Exception:  # noqa: BLE001 - a node that is still starting answers nothing
            return False
        return all(
            p.leader >= 0 and len(p.isrs) == len(p.replicas)
            for t in topics
            for p in t.partitions.values()
        )


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] == "Z"
    except (FileNotFoundError, IndexError):
        return True


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three local KRaft nodes on free ports in a tmp dir, stopped by pid at the end."""
    settings = KafkaSettings(
        local_nodes=NODES,
        local_port=free_port_block(2 * NODES),
        local_data_dir=tmp_path_factory.mktemp("kafka-cluster"),
        local_heap="384m",
    )
    local = LocalCluster(settings)
    try:
        local.up(wait=150)
    except LocalKafkaError as exc:
        local.down()
        message = f"the local three-node Kafka cluster could not start: {exc}"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield Cluster(local, local.bootstrap)
    finally:
        local.down()
