"""Kafka ACLs generated from the principals table: deny by default, allow only what is listed.

Rules follow Kafka's authorizer model (KIP-290 prefixed resources, `StandardAuthorizer` of KRaft
clusters): an ALLOW rule names a principal, a resource (topic, group, cluster), a pattern
(literal or prefixed) and an operation. Nobody but the admin gets ALTER, ALTER_CONFIGS or
ALL; `least_privilege_violations` checks that, and `allowed` evaluates a rule set the way the
broker does so tests can ask who may read what without a broker.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from caremesh import topics
from caremesh.security.principals import Kind, Principal


class Resource(enum.StrEnum):
    """Kafka resource types that caremesh grants on."""

    TOPIC = "TOPIC"
    GROUP = "GROUP"
    CLUSTER = "BROKER"  # confluent-kafka's ResourceType name for the cluster resource


class Pattern(enum.StrEnum):
    """How a rule's resource name matches."""

    LITERAL = "LITERAL"
    PREFIXED = "PREFIXED"


class Op(enum.StrEnum):
    """Kafka ACL operations used here."""

    ALL = "ALL"
    READ = "READ"
    WRITE = "WRITE"
    CREATE = "CREATE"
    DESCRIBE = "DESCRIBE"
    DESCRIBE_CONFIGS = "DESCRIBE_CONFIGS"
    ALTER = "ALTER"
    ALTER_CONFIGS = "ALTER_CONFIGS"


CLUSTER_NAME = "kafka-cluster"
"""The one name of the cluster resource."""

ADMIN_ONLY_OPS = frozenset({Op.ALL, Op.ALTER, Op.ALTER_CONFIGS})


@dataclass(frozen=True, slots=True, order=True)
class AclRule:
    """One ALLOW rule (host `*`)."""

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: Op

    def matches(self, resource: Resource, name: str) -> bool:
        """True when this rule's resource pattern covers `name`."""
        if resource != self.resource:
            return False
        if self.pattern is Pattern.PREFIXED:
            return name.startswith(self.name)
        return self.name in (name, "*")


def _topic_rules(p: Principal, prefix: str) -> Iterable[AclRule]:
    user = p.user
    for topic in p.reads:
        yield AclRule(user, Resource.TOPIC, prefix + topic, Pattern.LITERAL, Op.READ)
        yield AclRule(user, Resource.TOPIC, prefix + topic, Pattern.LITERAL, Op.DESCRIBE)
    for topic in p.writes:
        yield AclRule(user, Resource.TOPIC, prefix + topic, Pattern.LITERAL, Op.WRITE)
        yield AclRule(user, Resource.TOPIC, prefix + topic, Pattern.LITERAL, Op.DESCRIBE)
    owned = [(name, Pattern.PREFIXED) for name in p.owned_prefixes]
    owned += [(name, Pattern.LITERAL) for name in p.owned_topics]
    for name, pattern in owned:
        for op in (Op.READ, Op.WRITE, Op.CREATE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS):
            yield AclRule(user, Resource.TOPIC, name, pattern, op)


def _group_rules(p: Principal) -> Iterable[AclRule]:
    groups = [(g, Pattern.LITERAL) for g in p.groups]
    groups += [(g, Pattern.PREFIXED) for g in p.group_prefixes]
    for name, pattern in groups:
        yield AclRule(p.user, Resource.GROUP, name, pattern, Op.READ)
        yield AclRule(p.user, Resource.GROUP, name, pattern, Op.DESCRIBE)


def _admin_rules(p: Principal) -> Iterable[AclRule]:
    # The admin is a super user of the brokers caremesh configures; these rules keep it whole on
    # clusters where it is not (a managed Kafka, Strimzi).
    yield AclRule(p.user, Resource.CLUSTER, CLUSTER_NAME, Pattern.LITERAL, Op.ALL)
    yield AclRule(p.user, Resource.TOPIC, "*", Pattern.LITERAL, Op.ALL)
    yield AclRule(p.user, Resource.GROUP, "*", Pattern.LITERAL, Op.ALL)


def acl_rules(principals: Sequence[Principal], topic_prefix: str = "") -> list[AclRule]:
    """Every ALLOW rule of the platform, sorted and without duplicates."""
    rules: set[AclRule] = set()
    for p in principals:
        if p.kind is Kind.ADMIN:
            rules.update(_admin_rules(p))
            continue
        rules.update(_topic_rules(p, topic_prefix))
        rules.update(_group_rules(p))
    return sorted(rules)


_IMPLIES_DESCRIBE = frozenset({Op.READ, Op.WRITE})


def allowed(
    rules: Iterable[AclRule], principal: str, op: Op, resource: Resource, name: str
) -> bool:
    """Whether the broker's authorizer, holding only `rules`, lets `principal` do `op`.

    Deny by default (`allow.everyone.if.no.acl.found=false`); ALL covers every operation and
    READ or WRITE imply DESCRIBE, as in Kafka.
    """
    user = principal if principal.startswith("User:") else f"User:{principal}"
    for rule in rules:
        if rule.principal != user or not rule.matches(resource, name):
            continue
        if rule.operation in (op, Op.ALL):
            return True
        if op is Op.DESCRIBE and rule.operation in _IMPLIES_DESCRIBE:
            return True
    return False


def least_privilege_violations(
    rules: Iterable[AclRule], admin: str, auditors: Iterable[str], topic_prefix: str = ""
) -> list[str]:
    """Rules that break the platform's invariants; empty when the set is sound.

    Only the admin alters ACLs, the cluster or any topic's configuration (the audit topic's
    among them), and only auditors (and the admin) read `audit.v1`.
    """
    admin_user = f"User:{admin}"
    auditor_users = {f"User:{a}" for a in auditors}
    audit = topic_prefix + topics.AUDIT
    problems = []
    for rule in rules:
        if rule.principal == admin_user:
            continue
        if rule.operation in ADMIN_ONLY_OPS:
            problems.append(f"{rule.principal} has {rule.operation} on {rule.name}")
        if rule.resource is Resource.CLUSTER:
            problems.append(f"{rule.principal} has a cluster rule ({rule.operation})")
        if rule.name == "*":
            problems.append(f"{rule.principal} has a rule on every {rule.resource}")
        if (
            rule.operation is Op.READ
            and rule.matches(Resource.TOPIC, audit)
            and rule.principal not in auditor_users
        ):
            problems.append(f"{rule.principal} can read {audit}")
    return problems
