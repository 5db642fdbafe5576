"""The local nodes' ports, folders and properties, and the replication chosen per broker count."""

from __future__ import annotations

from pathlib import Path

import pytest

from caremesh.errors import ConfigurationError
from caremesh.kafka import local_layout
from caremesh.kafka.admin import topic_replication
from caremesh.kafka.local_layout import NodeLayout, Replication
from caremesh.settings import KafkaSettings

TEMPLATE = (KafkaSettings().local_home / "server.properties.in").read_text()
SECURED = (KafkaSettings().local_home / "server-secured.properties.in").read_text()


def _props(text: str) -> dict[str, str]:
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    return dict(ln.split("=", 1) for ln in lines)


def _cluster(tmp: Path) -> KafkaSettings:
    return KafkaSettings(
        local_nodes=3, local_port=29100, local_controller_port=1, local_data_dir=tmp
    )


def test_the_single_node_keeps_its_ports_and_data_dir(tmp_path: Path) -> None:
    settings = KafkaSettings(local_port=9092, local_controller_port=9093, local_data_dir=tmp_path)
    assert local_layout.node_layouts(settings) == [NodeLayout(1, 9092, 9093, tmp_path)]


def test_cluster_nodes_derive_ports_and_folders_from_the_base(tmp_path: Path) -> None:
    nodes = local_layout.node_layouts(_cluster(tmp_path))
    assert [(n.node_id, n.port, n.controller_port) for n in nodes] == [
        (1, 29100, 29101),
        (2, 29102, 29103),
        (3, 29104, 29105),
    ]
    assert [n.data_dir for n in nodes] == [tmp_path / f"node-{i}" for i in range(3)]
    assert len({n.pid_file for n in nodes}) == 3
    assert local_layout.bootstrap_servers(nodes) == (
        "127.0.0.1:29100,127.0.0.1:29102,127.0.0.1:29104"
    )


def test_a_base_port_without_room_for_every_node_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        local_layout.node_layouts(_cluster(tmp_path).model_copy(update={"local_port": 65533}))


def test_local_nodes_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from caremesh.settings import Settings

    monkeypatch.setenv("CAREMESH_KAFKA__LOCAL_NODES", "3")
    assert Settings().kafka.local_nodes == 3
    monkeypatch.setenv("CAREMESH_KAFKA__LOCAL_NODES", "2")
    with pytest.raises(ValueError, match="local_nodes"):
        Settings()


@pytest.mark.parametrize("template", [TEMPLATE, SECURED], ids=["plaintext", "secured"])
def test_each_cluster_node_lists_every_voter_and_replicates_internal_topics(
    tmp_path: Path, template: str
) -> None:
    nodes = local_layout.node_layouts(_cluster(tmp_path))
    values = {**local_layout.node_values(nodes[1], nodes), "@SSL_LINES@": ""}
    props = _props(local_layout.fill(template, values))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:29101,2@127.0.0.1:29103,3@127.0.0.1:29105"
    )
    assert "127.0.0.1:29102" in props["listeners"]
    assert "127.0.0.1:29103" in props["listeners"]
    assert props["log.dirs"] == str(tmp_path / "node-1" / "logs")
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert props[key] == "3", key
    for key in (
        "min.insync.replicas",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "2", key


def test_the_single_node_replicates_once(tmp_path: Path) -> None:
    node = NodeLayout(1, 9092, 9093, tmp_path)
    props = _props(local_layout.fill(TEMPLATE, local_layout.node_values(node, [node])))
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["default.replication.factor"] == "1"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert not any("@" in v and k != "controller.quorum.voters" for k, v in props.items())


@pytest.mark.parametrize(
    ("brokers", "configured", "expected"),
    [
        (1, None, Replication(1, 1)),
        (2, None, Replication(2, 1)),
        (3, None, Replication(3, 2)),
        (5, None, Replication(3, 2)),
        (3, 1, Replication(1, 1)),
        (1, 3, Replication(3, 2)),
    ],
)
def test_topic_replication_follows_the_brokers_unless_configured(
    brokers: int, configured: int | None, expected: Replication
) -> None:
    assert topic_replication(brokers, configured) == expected


def test_the_cluster_runs_one_local_node_per_layout_sharing_one_broker_secret(
    tmp_path: Path,
) -> None:
    from caremesh.kafka.local_cluster import LocalCluster

    cluster = LocalCluster(_cluster(tmp_path))
    assert [n.bootstrap for n in cluster.nodes] == [
        "127.0.0.1:29100",
        "127.0.0.1:29102",
        "127.0.0.1:29104",
    ]
    assert [n.pid_file for n in cluster.nodes] == [
        tmp_path / f"node-{i}" / "broker.pid" for i in range(3)
    ]
    assert {n.secret_dir for n in cluster.nodes} == {tmp_path}
    assert all(n.nodes == cluster.layouts for n in cluster.nodes)
    single = LocalCluster(KafkaSettings(local_port=9092, local_data_dir=tmp_path))
    assert [n.pid_file for n in single.nodes] == [tmp_path / "broker.pid"]
    assert single.bootstrap == "127.0.0.1:9092"
