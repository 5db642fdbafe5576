"""Topic administration: create the catalogue's missing topics and verify existing ones."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from caremesh.errors import KafkaUnavailableError, TopicMismatchError
from caremesh.kafka.client import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    KafkaError,
    KafkaException,
    NewTopic,
    ResourceType,
)
from caremesh.kafka.config import KafkaTarget, confluent_config
from caremesh.kafka.local_layout import Replication, replication_for
from caremesh.topics import TopicSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicOutcome:
    """What `ensure_topics` did with one topic."""

    name: str
    action: str  # "created" | "verified" | "updated"


def reachable(
    bootstrap_servers: str, timeout: float = 5.0, client_config: Mapping[str, str] | None = None
) -> bool:
    """True when a broker at `bootstrap_servers` answers a metadata request within `timeout`
    (librdkafka's connection errors are not logged: the caller says what is wrong, once)."""
    config: dict[str, str | int | float | bool] = {
        "bootstrap.servers": bootstrap_servers,
        "log_level": 0,
        **(client_config or {}),
    }
    admin = AdminClient(config)
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


def topic_replication(brokers: int, configured: int | None) -> Replication:
    """The replication of a new topic: `configured` (CAREMESH_KAFKA__REPLICATION_FACTOR) when set,
    else chosen from the number of brokers the cluster reports (`replication_for`: 3 replicas
    and `min.insync.replicas` 2 from three brokers on, 1 and 1 on one)."""
    if configured is None:
        return replication_for(brokers)
    return Replication(configured, 2 if configured >= 3 else 1)


def ensure_topics(
    bootstrap_servers: str,
    specs: Sequence[TopicSpec],
    *,
    partitions: int,
    replication_factor: int | None,
    prefix: str = "",
    timeout: float = 30.0,
    client_config: Mapping[str, str] | None = None,
) -> list[TopicOutcome]:
    """Create missing topics and verify existing ones, idempotently.

    An existing topic with fewer partitions than the catalogue says is an error (adding partitions
    would move patients between partitions); differing configs are brought in line. With
    `replication_factor` None, new topics follow the broker count (`topic_replication`).
    """
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **(client_config or {})})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"no metadata from {bootstrap_servers}") from exc
    existing = metadata.topics
    replication = topic_replication(len(metadata.brokers), replication_factor)

    outcomes: list[TopicOutcome] = []
    to_create = []
    for spec in specs:
        name = prefix + spec.name
        want = spec.partitions or partitions
        if name in existing:
            have = len(existing[name].partitions)
            if have != want:
                raise TopicMismatchError(
                    f"topic {name} has {have} partitions, catalogue says {want}"
                )
            continue
        to_create.append(
            NewTopic(
                name,
                num_partitions=want,
                replication_factor=replication.factor,
                config={**spec.config(), "min.insync.replicas": str(replication.min_insync)},
            )
        )
    if to_create:
        for name, future in admin.create_topics(to_create, request_timeout=timeout).items():
            try:
                future.result()
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise KafkaUnavailableError(f"could not create topic {name}") from exc
            outcomes.append(TopicOutcome(name, "created"))
            log.info("topic created: %s (replicas %d)", name, replication.factor)

    created = {o.name for o in outcomes}
    verify = [s for s in specs if prefix + s.name not in created]
    if verify:
        resources = [ConfigResource(ResourceType.TOPIC, prefix + s.name) for s in verify]
        described = admin.describe_configs(resources, request_timeout=timeout)
        by_name = {r.name: f.result() for r, f in described.items()}
        for spec in verify:
            name = prefix + spec.name
            current = by_name[name]
            drift = {k: v for k, v in spec.config().items() if current[k].value != v}
            if drift:
                res = ConfigResource(
                    ResourceType.TOPIC,
                    name,
                    incremental_configs=[
                        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                        for k, v in drift.items()
                    ],
                )
                for fut in admin.incremental_alter_configs([res]).values():
                    fut.result()
                outcomes.append(TopicOutcome(name, "updated"))
                log.info("topic config updated: %s (%s)", name, ", ".join(sorted(drift)))
            else:
                outcomes.append(TopicOutcome(name, "verified"))
    return outcomes


def ensure_compacted(
    bootstrap: KafkaTarget,
    topic: str,
    partitions: int,
    replication: int | None,
    *,
    retention_ms: int | None = None,
) -> None:
    """Create a compacted state topic unless it exists (with `retention_ms`, old keys expire);
    `replication` None follows the broker count (`topic_replication`)."""
    config = {"cleanup.policy": "compact"}
    if retention_ms is not None:
        config = {"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms)}
    admin = AdminClient(confluent_config(bootstrap))
    metadata = admin.list_topics(timeout=30)
    if topic in metadata.topics:
        wait_for_leaders(admin, topic)
        return
    chosen = topic_replication(len(metadata.brokers), replication)
    config["min.insync.replicas"] = str(chosen.min_insync)
    futures = admin.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=partitions,
                replication_factor=chosen.factor,
                config=config,
            )
        ]
    )
    for future in futures.values():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    wait_for_leaders(admin, topic)


def wait_for_leaders(admin: AdminClient, topic: str, timeout: float = 60.0) -> None:
    """Wait until every partition of a (just created) topic has a leader.

    A topic exists for the controller before each partition's leader is known to the broker
    that answers metadata; reading watermarks in that gap fails with LEADER_NOT_AVAILABLE.
    """
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(topic, timeout=30).topics.get(topic)
        ready = (
            meta is not None
            and meta.error is None
            and bool(meta.partitions)
            and all(p.error is None and p.leader >= 0 for p in meta.partitions.values())
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic} has partitions without a leader after {timeout}s")
        time.sleep(0.1)
