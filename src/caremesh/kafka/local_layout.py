"""Where each node of the local broker or cluster listens and keeps its data, and its properties.

Pure values for `caremesh.kafka.local` (Apache Kafka 4.1, KRaft, static quorum): the single node
keeps today's ports and data dir; a cluster of `local_nodes` combined broker+controller nodes
derives node i's (0-based, `node.id` i + 1) client port `local_port` + 2i, controller port
`local_port` + 2i + 1 and data dir `local_data_dir`/node-<i>, and lists every node in
`controller.quorum.voters`. The replication of the internal topics follows the node count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from caremesh.errors import ConfigurationError
from caremesh.settings import KafkaSettings

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Replication:
    """Replicas per partition and the `min.insync.replicas` that an `acks=all` write needs."""

    factor: int
    min_insync: int


def replication_for(brokers: int) -> Replication:
    """The replication of a cluster of `brokers`: 3 replicas and 2 in sync from three brokers on
    (one broker may be lost with nothing refused and nothing lost), else every broker and 1."""
    if brokers < 1:
        raise ConfigurationError("a Kafka cluster has at least one broker")
    if brokers >= 3:
        return Replication(3, 2)
    return Replication(brokers, 1)


@dataclass(frozen=True, slots=True)
class NodeLayout:
    """One local node: its id, ports and folders."""

    node_id: int
    port: int
    controller_port: int
    data_dir: Path

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"


def single_node(settings: KafkaSettings) -> NodeLayout:
    """The single node: `local_port`, `local_controller_port`, `local_data_dir` as they are."""
    return NodeLayout(
        1, settings.local_port, settings.local_controller_port, settings.local_data_dir
    )


def node_layouts(settings: KafkaSettings) -> list[NodeLayout]:
    """The nodes `settings` describe: the single node, or the derived nodes of a cluster."""
    if settings.local_nodes == 1:
        return [single_node(settings)]
    top = settings.local_port + 2 * settings.local_nodes - 1
    if top > 65535:
        raise ConfigurationError(
            f"CAREMESH_KAFKA__LOCAL_PORT {settings.local_port} leaves no room for "
            f"{settings.local_nodes} nodes (ports up to {top})"
        )
    return [
        NodeLayout(
            i + 1,
            settings.local_port + 2 * i,
            settings.local_port + 2 * i + 1,
            settings.local_data_dir / f"node-{i}",
        )
        for i in range(settings.local_nodes)
    ]


def quorum_voters(nodes: Sequence[NodeLayout]) -> str:
    """`controller.quorum.voters`: id@host:controller-port of every node."""
    return ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in nodes)


KAFKA_SESSION_TIMEOUT_MS = 9000
"""Kafka's default `broker.session.timeout.ms`, kept for the single node (no one to fail over
to)."""
CLUSTER_SESSION_TIMEOUT_MS = 4000
"""A cluster node's: the controller fences a dead broker after 4 s without a heartbeat (Kafka's
9 s default would leave 6 s of the producers' 15 s message timeout), so a broker loss costs a
sender a short wait, never a 503; heartbeats go every second (`broker.heartbeat.interval.ms`)."""


def bootstrap_servers(nodes: Sequence[NodeLayout]) -> str:
    """The client bootstrap list of the nodes."""
    return ",".join(n.bootstrap for n in nodes)


def node_values(node: NodeLayout, nodes: Sequence[NodeLayout]) -> dict[str, str]:
    """The placeholders both server templates share, for one node of `nodes`."""
    replication = replication_for(len(nodes))
    return {
        "@NODE_ID@": str(node.node_id),
        "@QUORUM_VOTERS@": quorum_voters(nodes),
        "@PORT@": str(node.port),
        "@CONTROLLER_PORT@": str(node.controller_port),
        "@LOG_DIRS@": str(node.log_dirs),
        "@REPLICATION_FACTOR@": str(replication.factor),
        "@MIN_INSYNC@": str(replication.min_insync),
        "@BROKER_SESSION_TIMEOUT_MS@": str(
            CLUSTER_SESSION_TIMEOUT_MS if len(nodes) > 1 else KAFKA_SESSION_TIMEOUT_MS
        ),
    }


def fill(template: str, values: dict[str, str]) -> str:
    """`template` with each placeholder replaced."""
    text = template
    for key, value in values.items():
        text = text.replace(key, value)
    return text
