"""Bring a Kafka cluster's ACLs in line with the generated rules, idempotently.

The thin shell over confluent-kafka's AdminClient (`describe_acls`, `create_acls`,
`delete_acls`); `plan_acls` is the pure part: what to create, what is already there and, with
`prune`, which rules of the principals caremesh manages are no longer wanted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from caremesh.errors import KafkaUnavailableError
from caremesh.security.acl import AclRule, Op, Pattern, Resource

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AclPlan:
    """What `apply_acls` does (or would do, in a dry run)."""

    create: tuple[AclRule, ...]
    present: tuple[AclRule, ...]
    delete: tuple[AclRule, ...]


def plan_acls(
    desired: Iterable[AclRule],
    existing: Iterable[AclRule],
    managed: Iterable[str] = (),
    *,
    prune: bool = False,
) -> AclPlan:
    """Create what is missing; with `prune`, delete rules of `managed` users that are not wanted."""
    want = set(desired)
    have = set(existing)
    users = set(managed)
    stale = {r for r in have - want if r.principal in users} if prune else set()
    return AclPlan(tuple(sorted(want - have)), tuple(sorted(want & have)), tuple(sorted(stale)))


def _binding(rule: AclRule) -> Any:
    from caremesh.kafka.client import (  # noqa: PLC0415
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    return AclBinding(
        ResourceType[rule.resource.value],
        rule.name,
        ResourcePatternType[rule.pattern.value],
        rule.principal,
        "*",
        AclOperation[rule.operation.value],
        AclPermissionType.ALLOW,
    )


def _rule(binding: Any) -> AclRule | None:
    """An ALLOW binding for any host as a rule; None for anything caremesh does not write."""
    try:
        if binding.permission_type.name != "ALLOW" or binding.host != "*":
            return None
        return AclRule(
            binding.principal,
            Resource(binding.restype.name),
            binding.name,
            Pattern(binding.resource_pattern_type.name),
            Op(binding.operation.name),
        )
    except ValueError:
        return None


def existing_acls(admin: Any, timeout: float = 30.0) -> list[AclRule]:
    """Every ALLOW rule the cluster holds, as far as caremesh's rule model can express it."""
    from caremesh.kafka.client import (  # noqa: PLC0415
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        KafkaException,
        ResourcePatternType,
        ResourceType,
    )

    any_filter = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]  # None matches any name, principal and host
        ResourcePatternType.ANY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    try:
        bindings = admin.describe_acls(any_filter, request_timeout=timeout).result()
    except KafkaException as exc:
        raise KafkaUnavailableError(f"describe_acls failed: {exc.args[0].name()}") from exc
    return [r for r in (_rule(b) for b in bindings) if r is not None]


def apply_acls(
    client_config: Mapping[str, Any],
    rules: Sequence[AclRule],
    managed: Iterable[str] = (),
    *,
    dry_run: bool = False,
    prune: bool = False,
    timeout: float = 30.0,
) -> AclPlan:
    """Create the missing rules (and, with `prune`, delete stale ones of `managed` users).

    `client_config` is the admin's confluent-kafka configuration (bootstrap and credentials).
    """
    from caremesh.kafka.client import (  # noqa: PLC0415
        AdminClient,
        KafkaException,
    )

    admin = AdminClient(dict(client_config))
    plan = plan_acls(rules, existing_acls(admin, timeout), managed, prune=prune)
    if dry_run:
        return plan
    if plan.create:
        futures = admin.create_acls([_binding(r) for r in plan.create], request_timeout=timeout)
        for future in futures.values():
            try:
                future.result()
            except KafkaException as exc:
                raise KafkaUnavailableError(f"create_acls failed: {exc.args[0].name()}") from exc
        log.info("ACLs created: %d", len(plan.create))
    if plan.delete:
        delete_rules(admin, plan.delete, timeout)
        log.info("ACLs deleted: %d", len(plan.delete))
    return plan


def delete_rules(admin: Any, rules: Sequence[AclRule], timeout: float = 30.0) -> None:
    """Delete exactly these ACL bindings and wait for the broker's answer."""
    from caremesh.kafka.client import AclBindingFilter  # noqa: PLC0415

    filters = []
    for rule in rules:
        b = _binding(rule)
        filters.append(
            AclBindingFilter(
                b.restype,
                b.name,
                b.resource_pattern_type,
                b.principal,
                b.host,
                b.operation,
                b.permission_type,
            )
        )
    for future in admin.delete_acls(filters, request_timeout=timeout).values():
        future.result()
