"""Admission of a new member organisation, and its removal: `caremesh org add` / `org remove`.

`org add` does in one idempotent step what a new organisation needs: its outbox topic, its
principal `org-<id>` with SCRAM-SHA-512 credentials (created with the admin client's
`alter_user_scram_credentials`; the password is generated once, written to
`<state_dir>/secrets/org-<id>.password` with mode 0600 and reused on a re-run), the ACLs of the
platform with the organisation in it (its read of its outbox, the share stage's write to it, the
delivery connector's read when it has an endpoint) and its registration on the compacted topic
`organisations.v1` (`caremesh.tables.organisations`), which every share stage and delivery
connector follows: they start serving it without a restart, on whichever host they run.

`org remove` deletes the principal's ACLs and SCRAM credentials and its secret file, and writes a
`removed` registration, on which the share stages stop writing to its outbox and the delivery
connectors stop delivering to it; its outbox topic and every AuditEvent about it stay (the audit
trail). Nothing here logs or prints a password.

The registry is a topic, not a file: the processes that act on it run on other hosts than the
administrator's. Only the secret file is local: it is what the administrator hands over.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from caremesh.errors import KafkaUnavailableError
from caremesh.kafka.admin import ensure_topics
from caremesh.kafka.config import confluent_config, confluent_security
from caremesh.kafka.local_secured import SCRAM_MECHANISM, check_credential
from caremesh.security.acl import AclRule
from caremesh.security.apply import apply_acls, existing_acls
from caremesh.security.commands import platform
from caremesh.security.principals import organisation_name
from caremesh.settings import (
    DeliveryMode,
    FhirRelease,
    KafkaSettings,
    OrganisationSettings,
    Settings,
)
from caremesh.tables.organisations import Registration, effective, publish, read_registrations
from caremesh.topics import (
    BASE_TOPICS,
    ORGANISATIONS,
    TopicSpec,
    catalogue,
    outbox_topic,
)

log = logging.getLogger(__name__)

DEFAULT_SUBSCRIPTIONS = ("Observation", "Condition", "Encounter", "CareTeam", "Communication")
"""Resource types a new organisation subscribes to unless told otherwise."""
SCRAM_ITERATIONS = 8192


@dataclass(frozen=True, slots=True)
class Admission:
    """What `org add` did."""

    org: str
    principal: str
    secret_file: Path
    topic: str
    topic_action: str
    credentials_created: bool
    acls_created: int


@dataclass(frozen=True, slots=True)
class Removal:
    """What `org remove` did."""

    org: str
    principal: str
    acls_deleted: int
    credentials_deleted: bool


def secret_path(state_dir: Path, org_id: str) -> Path:
    return state_dir / "secrets" / f"{organisation_name(org_id)}.password"


def _registry_topic(kafka: KafkaSettings) -> str:
    return kafka.topic_prefix + ORGANISATIONS


def _registry_spec() -> TopicSpec:
    return next(s for s in BASE_TOPICS if s.name == ORGANISATIONS)


def _password(path: Path) -> tuple[str, bool]:
    """The organisation's password: read back, or generated and written with mode 0600."""
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    return password, True


def _admin(kafka: KafkaSettings) -> Any:
    from caremesh.kafka.client import AdminClient  # noqa: PLC0415

    return AdminClient(confluent_config(kafka))


def _upsert_scram(admin: Any, user: str, password: str, timeout: float = 30.0) -> None:
    from caremesh.kafka.client import (  # noqa: PLC0415
        KafkaException,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upsert = UserScramCredentialUpsertion(user, info, password.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            raise KafkaUnavailableError(
                f"alter_user_scram_credentials failed: {exc.args[0].name()}"
            ) from exc


def _delete_scram(admin: Any, user: str, timeout: float = 30.0) -> bool:
    from caremesh.kafka.client import (  # noqa: PLC0415  # noqa: PLC0415
        KafkaError,
        KafkaException,
        ScramMechanism,
        UserScramCredentialDeletion,
    )

    deletion = UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)
    for future in admin.alter_user_scram_credentials([deletion]).values():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.RESOURCE_NOT_FOUND:
                return False
            raise KafkaUnavailableError(
                f"alter_user_scram_credentials failed: {exc.args[0].name()}"
            ) from exc
    return True


def org_add(
    settings: Settings,
    org_id: str,
    *,
    territory: str,
    endpoint: str | None,
    subscriptions: list[str] | None = None,
    mode: DeliveryMode = "rest",
    fhir_release: FhirRelease = "R4",
) -> Admission:
    """Admit an organisation (idempotent: a re-run changes nothing and keeps its password)."""
    org = OrganisationSettings(
        id=org_id,
        fhir_endpoint=endpoint,
        subscriptions=list(subscriptions or DEFAULT_SUBSCRIPTIONS),
        delivery_mode=mode,
        fhir_release=fhir_release,
    )
    user = organisation_name(org.id)
    secret_file = secret_path(settings.state_dir, org.id)
    password, fresh = _password(secret_file)
    check_credential(user, password)
    spec = next(s for s in catalogue([org.id]) if s.name == outbox_topic(org.id))
    outcomes = ensure_topics(
        settings.kafka.bootstrap_servers,
        [spec, _registry_spec()],
        partitions=settings.kafka.partitions,
        replication_factor=settings.kafka.replication_factor,
        prefix=settings.kafka.topic_prefix,
        client_config=confluent_security(settings.kafka),
    )
    outcome = next(o for o in outcomes if o.name == settings.kafka.topic_prefix + spec.name)
    _upsert_scram(_admin(settings.kafka), user, password)
    registered = read_registrations(settings.kafka, _registry_topic(settings.kafka))
    others = effective(settings.organisations, registered)
    others.pop(org.id, None)
    merged = settings.model_copy(update={"organisations": [*others.values(), org]})
    found, rules = platform(merged)
    plan = apply_acls(confluent_config(settings.kafka), rules, [p.user for p in found], prune=False)
    registration = Registration(
        id=org.id,
        territory=territory,
        name=org.name,
        fhir_endpoint=org.fhir_endpoint,
        subscriptions=tuple(org.subscriptions),
        delivery_mode=org.delivery_mode,
        fhir_release=org.fhir_release,
    )
    before = registered.get(org.id)
    if before is None or replace(before, changed_at="") != replace(registration, changed_at=""):
        publish(settings.kafka, _registry_topic(settings.kafka), registration)
    log.info(
        "org add: organisation=%s topic=%s credentials=%s acls_created=%d",
        org.id,
        outcome.action,
        "created" if fresh else "kept",
        len(plan.create),
    )
    return Admission(
        org.id,
        user,
        secret_file,
        outcome.name,
        outcome.action,
        fresh,
        len(plan.create),
    )


def _delete_rules(admin: Any, rules: list[AclRule], timeout: float = 30.0) -> None:
    from caremesh.security.apply import delete_rules  # noqa: PLC0415

    delete_rules(admin, rules, timeout)


def org_remove(settings: Settings, org_id: str) -> Removal:
    """Revoke an organisation's access (ACLs, credentials); its topic and audit trail stay."""
    org = OrganisationSettings(id=org_id)
    user = organisation_name(org.id)
    admin = _admin(settings.kafka)
    mine = [r for r in existing_acls(admin) if r.principal == f"User:{user}"]
    if mine:
        _delete_rules(admin, mine)
    deleted = _delete_scram(admin, user)
    secret_path(settings.state_dir, org.id).unlink(missing_ok=True)
    ensure_topics(
        settings.kafka.bootstrap_servers,
        [_registry_spec()],
        partitions=settings.kafka.partitions,
        replication_factor=settings.kafka.replication_factor,
        prefix=settings.kafka.topic_prefix,
        client_config=confluent_security(settings.kafka),
    )
    before = read_registrations(settings.kafka, _registry_topic(settings.kafka)).get(org.id)
    if before is None or before.active:
        kept = before or Registration(id=org.id)
        removed = replace(kept, status="removed", changed_at=datetime.now(UTC).isoformat())
        publish(settings.kafka, _registry_topic(settings.kafka), removed)
    log.info(
        "org remove: organisation=%s acls_deleted=%d credentials_deleted=%s",
        org.id,
        len(mine),
        deleted,
    )
    return Removal(org.id, user, len(mine), deleted)


__all__ = [
    "DEFAULT_SUBSCRIPTIONS",
    "SCRAM_MECHANISM",
    "Admission",
    "Removal",
    "org_add",
    "org_remove",
]
