"""The worker creates its Faust tables' changelog topics before it joins its group."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from caremesh.settings import Settings
from caremesh.streams.worker import build_worker_app, ensure_changelogs
from tests.support.kafka import Namespace

pytestmark = pytest.mark.kafka


def test_changelogs_exist_compacted_and_partitioned_like_their_sources_before_the_group(
    namespace: Namespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in namespace.env().items():
        if name.startswith("CAREMESH_"):
            monkeypatch.setenv(name, value)
    settings = Settings()
    app = build_worker_app(settings, ["share", "pathways"])
    names = sorted(table.changelog_topic_name for table in app.tables.values())
    assert len(names) == 2
    assert all(name.startswith(namespace.prefix) for name in names)

    ensure_changelogs(app, settings)
    ensure_changelogs(app, settings)  # again, as every restart does: existing topics are kept

    admin = AdminClient({"bootstrap.servers": namespace.kafka})
    topics = admin.list_topics(timeout=30).topics
    for name in names:
        found = topics[name]
        assert found.error is None
        assert len(found.partitions) == namespace.partitions
        assert all(p.leader >= 0 for p in found.partitions.values())
    configs = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names])
    for future in configs.values():
        assert future.result(timeout=30)["cleanup.policy"].value == "compact"
