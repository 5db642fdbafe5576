"""Strimzi `KafkaTopic` and `KafkaUser` resources generated from the catalogue and the ACLs.

Follows the Strimzi custom resources `kafka.strimzi.io/v1beta2` (Strimzi 0.4x): one KafkaTopic
per catalogue topic (partitions, replicas, topic configs) and one KafkaUser per principal with
SCRAM-SHA-512 authentication and `simple` authorization whose ACLs are the generated rules.
Strimzi's User Operator then creates each user's password in a Secret of the same name.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import yaml

from caremesh.errors import ConfigurationError
from caremesh.security.acl import AclRule, Op, Pattern, Resource
from caremesh.security.principals import Principal
from caremesh.topics import TopicSpec

API_VERSION = "kafka.strimzi.io/v1beta2"
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")

_PATTERNS = {Pattern.LITERAL: "literal", Pattern.PREFIXED: "prefix"}
_OPERATIONS = {
    Op.ALL: "All",
    Op.READ: "Read",
    Op.WRITE: "Write",
    Op.CREATE: "Create",
    Op.DESCRIBE: "Describe",
    Op.DESCRIBE_CONFIGS: "DescribeConfigs",
    Op.ALTER: "Alter",
    Op.ALTER_CONFIGS: "AlterConfigs",
}


def resource_name(name: str) -> str:
    """A Kubernetes object name (RFC 1123 subdomain) for a topic or user name."""
    candidate = name.lower().replace("_", "-")
    if not _DNS_1123.match(candidate):
        raise ConfigurationError(f"{name!r} cannot be made a Kubernetes resource name")
    return candidate


def kafka_topics(
    specs: Sequence[TopicSpec],
    *,
    cluster: str,
    partitions: int,
    replicas: int,
    prefix: str = "",
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    """One KafkaTopic per catalogue topic."""
    docs = []
    for spec in specs:
        topic = prefix + spec.name
        metadata: dict[str, Any] = {
            "name": resource_name(topic),
            "labels": {"strimzi.io/cluster": cluster, "app.kubernetes.io/part-of": "caremesh"},
        }
        if namespace:
            metadata["namespace"] = namespace
        docs.append(
            {
                "apiVersion": API_VERSION,
                "kind": "KafkaTopic",
                "metadata": metadata,
                "spec": {
                    "topicName": topic,
                    "partitions": spec.partitions or partitions,
                    "replicas": replicas,
                    "config": spec.config(),
                },
            }
        )
    return docs


def _acls(rules: Sequence[AclRule], principal: Principal) -> list[dict[str, Any]]:
    grouped: dict[tuple[Resource, str, str], list[str]] = defaultdict(list)
    for rule in rules:
        if rule.principal == principal.user:
            key = (rule.resource, rule.name, _PATTERNS[rule.pattern])
            grouped[key].append(_OPERATIONS[rule.operation])
    acls = []
    for (resource, name, pattern), operations in sorted(grouped.items()):
        target: dict[str, Any] = {"type": "cluster"}
        if resource is not Resource.CLUSTER:
            target = {"type": resource.value.lower(), "name": name, "patternType": pattern}
        acls.append({"resource": target, "operations": sorted(operations), "host": "*"})
    return acls


def kafka_users(
    principals: Sequence[Principal],
    rules: Sequence[AclRule],
    *,
    cluster: str,
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    """One KafkaUser per principal, SCRAM-SHA-512, with exactly its generated ACLs."""
    docs = []
    for principal in principals:
        name = resource_name(principal.name)
        if name != principal.name:
            raise ConfigurationError(
                f"principal {principal.name!r} is not a valid KafkaUser name; use lower-case "
                "letters, digits, '-' and '.' in ids"
            )
        metadata: dict[str, Any] = {
            "name": name,
            "labels": {"strimzi.io/cluster": cluster, "app.kubernetes.io/part-of": "caremesh"},
            "annotations": {"caremesh.org/role": principal.description},
        }
        if namespace:
            metadata["namespace"] = namespace
        docs.append(
            {
                "apiVersion": API_VERSION,
                "kind": "KafkaUser",
                "metadata": metadata,
                "spec": {
                    "authentication": {"type": "scram-sha-512"},
                    "authorization": {"type": "simple", "acls": _acls(rules, principal)},
                },
            }
        )
    return docs


def render_yaml(docs: Sequence[dict[str, Any]], header: str = "") -> str:
    """A multi-document YAML stream."""
    body = yaml.safe_dump_all(list(docs), sort_keys=False, explicit_start=True)
    return (header + "\n" if header else "") + body
