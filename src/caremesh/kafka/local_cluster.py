"""The local KRaft cluster: `local_nodes` combined broker+controller nodes started as one.

`caremesh kafka up --nodes 3` runs three `LocalKafka` nodes on 127.0.0.1 (ports and folders from
`local_layout`), formatted with one cluster id and listing each other as the controller quorum.
They start together (a node answers only once a quorum of controllers has elected a leader), and
stop together; each keeps its own pid file, so a test can kill or restart one node by its pid.
With one node this is the single local broker.
"""

from __future__ import annotations

import logging
import shutil

from caremesh.errors import LocalKafkaError
from caremesh.kafka import local_layout
from caremesh.kafka.local import BrokerStatus, LocalKafka
from caremesh.settings import KafkaSettings

log = logging.getLogger(__name__)


class LocalCluster:
    """The local nodes `KafkaSettings.local_nodes` asks for."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.layouts = local_layout.node_layouts(settings)
        if len(self.layouts) == 1:
            self.nodes = [LocalKafka(settings)]
        else:
            self.nodes = [LocalKafka(settings, node, self.layouts) for node in self.layouts]
        self.bootstrap = local_layout.bootstrap_servers(self.layouts)

    def _cluster_id(self) -> str:
        """The id every node is formatted with: the one a formatted node has, else a new one."""
        ids = {i for i in (n.formatted_cluster_id() for n in self.nodes) if i is not None}
        if len(ids) > 1:
            raise LocalKafkaError(
                f"the nodes in {self.settings.local_data_dir} belong to different clusters; "
                "run `caremesh kafka reset --nodes N`"
            )
        return ids.pop() if ids else self.nodes[0].new_cluster_id()

    def up(self, wait: float = 120.0) -> list[BrokerStatus]:
        """Start every node that is not running, then wait until each answers."""
        current = [node.status() for node in self.nodes]
        if all(s.running and s.answering for s in current):
            running = ", ".join(str(s.pid) for s in current)
            log.info("local Kafka already running (pid %s) on %s", running, self.bootstrap)
            return current
        self.nodes[0].fetch_jars()
        for node in self.nodes:
            node.check_ports()
        cluster_id = self._cluster_id()
        pids = [node.start(cluster_id) for node in self.nodes]
        statuses = [
            node.wait_answering(pid, wait) for node, pid in zip(self.nodes, pids, strict=True)
        ]
        log.info("local Kafka cluster of %d nodes up on %s", len(self.nodes), self.bootstrap)
        return statuses

    def start_node(self, index: int, wait: float = 120.0) -> BrokerStatus:
        """(Re)start one node of a formatted cluster and wait until it answers."""
        node = self.nodes[index]
        return node.wait_answering(node.start(self._cluster_id()), wait)

    def down(self, wait: float = 30.0) -> int:
        """Stop every node at once (SIGTERM, then SIGKILL); the number that were running.

        All are signalled before any is awaited: a node stopped last, alone, would wait for a
        controller quorum that is already gone."""
        signalled = [(node, node.stop_signal()) for node in self.nodes]
        for node, pid in signalled:
            if pid is not None:
                node.await_exit(pid, wait)
        return sum(1 for _, pid in signalled if pid is not None)

    def status(self) -> list[BrokerStatus]:
        return [node.status() for node in self.nodes]

    def reset(self) -> None:
        """Stop the nodes and delete their data (a fresh cluster on the next `up`)."""
        self.down()
        for layout in self.layouts:
            if layout.data_dir.exists() and layout.data_dir != self.settings.local_data_dir:
                shutil.rmtree(layout.data_dir)
        if len(self.layouts) == 1 and self.settings.local_data_dir.exists():
            shutil.rmtree(self.settings.local_data_dir)
