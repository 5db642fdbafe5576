"""Who connects to Kafka and what each one needs: the principals of DESIGN §9, from configuration.

One principal per component (each worker stage, each connector), per organisation, per study,
plus auditors, operators and the admin. Each `Principal` names the catalogue topics it reads and
writes, the consumer groups it uses and the internal topics it owns (the stages' state topics,
whose names start with the topic prefix and the worker app id). `caremesh.security.acl` turns
this table into Kafka ACLs; nothing here talks to Kafka.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from caremesh import topics
from caremesh.settings import Settings
from caremesh.topics import (
    DEADLETTER_CLI_GROUP,
    DEADLETTER_KEYS_GROUP,
    GLOBAL_STATE_GROUP,
    LEDGER_OFFSETS_GROUP,
    STATE_READER_GROUP,
    VAULT_READER_GROUP,
)


class Kind(enum.StrEnum):
    """What a principal stands for."""

    STAGE = "stage"
    WORKER = "worker"
    CONNECTOR = "connector"
    ORGANISATION = "organisation"
    STUDY = "study"
    AUDITOR = "auditor"
    OPERATOR = "operator"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """One Kafka user and the resources it may use (topic names without the topic prefix)."""

    name: str
    kind: Kind
    description: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    """Consumer groups used with exactly these names."""
    group_prefixes: tuple[str, ...] = ()
    """Consumer groups whose names start with one of these (external readers' own groups)."""
    owned_prefixes: tuple[str, ...] = ()
    """Internal topics (full names, topic prefix included) it creates, reads and writes."""
    owned_topics: tuple[str, ...] = ()
    """Internal topics with exactly these full names."""

    @property
    def user(self) -> str:
        """The principal as Kafka's authorizer names it."""
        return f"User:{self.name}"


STAGES = ("hl7v2", "validate", "share", "pathways", "research")
"""The worker stages, as `caremesh worker --stage NAME` names them."""

CONNECTORS = ("ingest-api", "mllp", "import", "consent-api", "delivery", "inbox")


def component_name(component: str) -> str:
    """The principal of a worker stage or connector (`caremesh-validate`)."""
    return f"caremesh-{component}"


def organisation_name(org_id: str) -> str:
    """The principal of an organisation reading its own outbox."""
    return f"org-{org_id}"


def study_name(study_id: str) -> str:
    """The principal of a study reading its own research topic."""
    return f"study-{study_id}"


def own_group_prefix(name: str) -> str:
    """Group prefix of an external reader: its name and a dot (ids never hold dots, so the
    prefix of `study-a` does not match the groups of `study-ab`)."""
    return f"{name}."


def _stage(name: str, settings: Settings) -> Principal:
    app_id = settings.worker.app_id
    prefix = settings.kafka.topic_prefix
    orgs = tuple(topics.outbox_topic(o.id) for o in settings.organisations)
    studies = tuple(topics.research_topic(s.id) for s in settings.studies)
    # its own group, the consent ledger follower, the data-key store, the state loader
    patient_groups = (
        f"{app_id}-{name}",
        LEDGER_OFFSETS_GROUP,
        DEADLETTER_KEYS_GROUP,
        STATE_READER_GROUP,
    )
    keys = (topics.KEYS_PATIENT,)  # wrapped data keys: dead letters and the vault are sealed
    out = (topics.AUDIT, topics.DEADLETTER)
    desc = f"worker stage {name}"
    if name == "hl7v2":
        return Principal(
            component_name(name),
            Kind.STAGE,
            desc,
            reads=(topics.INGEST_HL7V2,),
            writes=(topics.INGEST_FHIR, topics.DEADLETTER),
            groups=(f"{app_id}-hl7v2",),
        )
    if name == "validate":
        return Principal(
            component_name(name),
            Kind.STAGE,
            desc,
            reads=(topics.INGEST_FHIR,),
            writes=(topics.CLINICAL_FHIR, topics.DEADLETTER),
            groups=(f"{app_id}-validate", STATE_READER_GROUP, GLOBAL_STATE_GROUP),
            owned_prefixes=(f"{prefix}{app_id}-validate",),
        )
    if name == "share":
        return Principal(
            component_name(name),
            Kind.STAGE,
            desc,
            reads=(topics.CLINICAL_FHIR, topics.CONSENT_EVENTS, topics.ORGANISATIONS, *keys),
            writes=(*orgs, *out, *keys),
            groups=patient_groups,
            owned_prefixes=(f"{prefix}{app_id}-share",),
        )
    if name == "pathways":
        return Principal(
            component_name(name),
            Kind.STAGE,
            desc,
            reads=(topics.CLINICAL_FHIR, topics.PATHWAY_ACTIONS, topics.CONSENT_EVENTS, *keys),
            writes=(topics.PATHWAY_ALERTS, *out, *keys),
            groups=patient_groups,
            owned_prefixes=(f"{prefix}{app_id}-pathways",),
        )
    if name == "research":
        return Principal(
            component_name(name),
            Kind.STAGE,
            desc,
            reads=(topics.CLINICAL_FHIR, topics.CONSENT_EVENTS, *keys),
            writes=(*studies, *out, *keys),
            groups=patient_groups,
            owned_prefixes=(f"{prefix}{app_id}-research",),
        )
    raise ValueError(f"unknown stage {name}")


def _union(name: str, kind: Kind, description: str, parts: list[Principal]) -> Principal:
    def merged(attr: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v for p in parts for v in getattr(p, attr)))

    return Principal(
        name,
        kind,
        description,
        reads=merged("reads"),
        writes=merged("writes"),
        groups=merged("groups"),
        group_prefixes=merged("group_prefixes"),
        owned_prefixes=merged("owned_prefixes"),
        owned_topics=merged("owned_topics"),
    )


def _connectors(settings: Settings) -> list[Principal]:
    prefix = settings.kafka.topic_prefix
    outboxes = tuple(topics.outbox_topic(o.id) for o in settings.organisations if o.fhir_endpoint)
    return [
        Principal(
            component_name("ingest-api"),
            Kind.CONNECTOR,
            "FHIR HTTP ingest API",
            writes=(topics.INGEST_FHIR,),
        ),
        Principal(
            component_name("mllp"),
            Kind.CONNECTOR,
            "HL7 v2 MLLP listener",
            writes=(topics.INGEST_HL7V2,),
        ),
        Principal(
            component_name("import"),
            Kind.CONNECTOR,
            "bulk NDJSON import",
            writes=(topics.INGEST_FHIR,),
        ),
        Principal(
            component_name("consent-api"),
            Kind.CONNECTOR,
            "consent API",
            # the validate stage's learned patient links key a source's Consent by reference
            reads=(
                topics.CONSENT_EVENTS,
                topics.KEYS_PATIENT,
                f"{settings.worker.app_id}-validate-patient-links",
            ),
            writes=(topics.CONSENT_EVENTS, topics.AUDIT, topics.KEYS_PATIENT),
            groups=(LEDGER_OFFSETS_GROUP, VAULT_READER_GROUP, GLOBAL_STATE_GROUP),
        ),
        Principal(
            component_name("delivery"),
            Kind.CONNECTOR,
            "FHIR REST delivery of the outboxes",
            reads=(*outboxes, topics.ORGANISATIONS),
            writes=(topics.DELIVERY_FAILED, topics.AUDIT),
            groups=tuple(
                f"{prefix}delivery-{o.id}" for o in settings.organisations if o.fhir_endpoint
            ),
        ),
        Principal(
            component_name("inbox"),
            Kind.CONNECTOR,
            "care coordinators' inbox",
            # the alert cards' patient context: Patient and CareTeam, shown as consent permits
            reads=(
                topics.PATHWAY_ALERTS,
                topics.PATHWAY_ACTIONS,
                topics.CLINICAL_FHIR,
                topics.CONSENT_EVENTS,
            ),
            writes=(topics.PATHWAY_ACTIONS, topics.AUDIT),
            groups=(LEDGER_OFFSETS_GROUP,),
        ),
    ]


def principals(settings: Settings) -> list[Principal]:
    """Every principal of the configured platform, admin last."""
    stages = [_stage(name, settings) for name in STAGES]
    found = list(stages)
    found.append(
        _union(component_name("worker"), Kind.WORKER, "worker running every stage", stages)
    )
    found.extend(_connectors(settings))
    for org in settings.organisations:
        name = organisation_name(org.id)
        found.append(
            Principal(
                name,
                Kind.ORGANISATION,
                f"organisation {org.id} reading its outbox",
                reads=(topics.outbox_topic(org.id),),
                group_prefixes=(own_group_prefix(name),),
            )
        )
    for study in settings.studies:
        name = study_name(study.id)
        found.append(
            Principal(
                name,
                Kind.STUDY,
                f"study {study.id} reading its pseudonymised stream",
                reads=(topics.research_topic(study.id),),
                group_prefixes=(own_group_prefix(name),),
            )
        )
    found.extend(
        Principal(
            name,
            Kind.AUDITOR,
            "auditor",
            reads=(topics.AUDIT,),
            group_prefixes=(own_group_prefix(name),),
        )
        for name in settings.security.auditors
    )
    found.extend(
        Principal(
            name,
            Kind.OPERATOR,
            "operator reading dead letters and failed deliveries",
            reads=(topics.DEADLETTER, topics.DELIVERY_FAILED, topics.KEYS_PATIENT),
            writes=(topics.AUDIT,),  # `deadletter show` audits every disclosure
            groups=(DEADLETTER_CLI_GROUP, VAULT_READER_GROUP),
            group_prefixes=(own_group_prefix(name),),
        )
        for name in settings.security.operators
    )
    found.append(Principal(settings.security.admin, Kind.ADMIN, "platform administrator"))
    names = [p.name for p in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"principal names used twice: {', '.join(duplicates)}")
    return found
