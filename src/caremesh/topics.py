"""The topic catalogue of DESIGN §2, once: name, key, partitions, retention, compaction, readers.

Per-organisation outbox topics and per-study research topics come from configuration. Every
patient-keyed topic has the same partition count so that tables and streams are co-partitioned.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
FOREVER = -1


class KeyKind(enum.StrEnum):
    """What a topic's record key is."""

    SOURCE_MESSAGE_ID = "source message id"
    SOURCE_CONTROL_ID = "source message control id"
    PATIENT_KEY = "patient key"
    ORIGINAL_KEY = "original key"
    STUDY_PSEUDONYM = "study pseudonym"
    EVENT_ID = "event id"
    ORGANISATION_ID = "organisation id"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic of the catalogue."""

    name: str
    key: KeyKind
    value: str
    retention_ms: int
    readers: tuple[str, ...]
    compacted: bool = False
    partitions: int | None = None
    """None: the configured patient-keyed partition count."""
    extra_config: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def config(self) -> dict[str, str]:
        """The topic-level configs the broker should hold for this topic."""
        cfg = {
            "cleanup.policy": "compact" if self.compacted else "delete",
            "retention.ms": str(self.retention_ms),
            "max.message.bytes": str(16 * 1024 * 1024),
        }
        cfg.update(dict(self.extra_config))
        return cfg


INGEST_FHIR = "ingest.fhir.v1"
INGEST_HL7V2 = "ingest.hl7v2.v1"
CLINICAL_FHIR = "clinical.fhir.v1"
DEADLETTER = "deadletter.v1"
CONSENT_EVENTS = "consent.events.v1"
PATHWAY_ALERTS = "pathway.alerts.v1"
PATHWAY_ACTIONS = "pathway.actions.v1"
AUDIT = "audit.v1"
KEYS_PATIENT = "keys.patient.v1"
DELIVERY_FAILED = "delivery.failed.v1"
ORGANISATIONS = "organisations.v1"
"""The organisations registry: compacted, one partition, keyed by organisation id."""

# Consumer-group ids of the readers that assign partitions themselves (never join, never commit).
LEDGER_OFFSETS_GROUP = "caremesh-ledger-offsets"
"""Group id of the consent ledger's end-offset reader (it never joins or commits)."""
STATE_READER_GROUP = "caremesh-state-reader"
"""Group id of the batch stages' state reader (assign only, never commits)."""
GLOBAL_STATE_GROUP = "caremesh-global"
"""Group id of the batch stages' global-state follower (assign only, never commits)."""
DEADLETTER_KEYS_GROUP = "caremesh-deadletter-keys"
"""Group id of a stage's reader of the wrapped patient data keys (assign only, never commits)."""
VAULT_READER_GROUP = "caremesh-vault-reader"
"""Group id of the re-identification vault reader (assign only, never commits)."""
DEADLETTER_CLI_GROUP = "caremesh-deadletter-cli"
"""Group id of `caremesh deadletter` (assign only, never commits)."""


def patient_links_topic(prefix: str, app_id: str) -> str:
    """The validate stage's changelog of learned `<source>/Patient/<id>` → INS mappings (read
    by the consent API too, to key a Consent that names its patient by reference)."""
    return f"{prefix}{app_id}-validate-patient-links"


def outbox_topic(org_id: str) -> str:
    """The outbox topic of one organisation."""
    return f"outbox.{org_id}.v1"


def research_topic(study_id: str) -> str:
    """The pseudonymised stream of one study."""
    return f"research.{study_id}.v1"


BASE_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        INGEST_FHIR,
        KeyKind.SOURCE_MESSAGE_ID,
        "FHIR JSON as received (resource or Bundle)",
        7 * DAY_MS,
        ("validate stage",),
    ),
    TopicSpec(
        INGEST_HL7V2,
        KeyKind.SOURCE_CONTROL_ID,
        "HL7 v2 message bytes as received",
        7 * DAY_MS,
        ("hl7v2 stage",),
    ),
    TopicSpec(
        CLINICAL_FHIR,
        KeyKind.PATIENT_KEY,
        "one validated FHIR resource",
        30 * DAY_MS,
        ("share stage", "pathways stage", "research stage", "inbox"),
    ),
    TopicSpec(
        DEADLETTER,
        KeyKind.ORIGINAL_KEY,
        "original bytes + reason headers",
        30 * DAY_MS,
        ("operators",),
    ),
    TopicSpec(
        CONSENT_EVENTS,
        KeyKind.PATIENT_KEY,
        "FHIR Consent (R4 or R5 JSON) or a withdrawal",
        FOREVER,
        ("consent-aware stages", "consent API", "inbox"),
    ),
    TopicSpec(
        PATHWAY_ALERTS,
        KeyKind.PATIENT_KEY,
        "FHIR Communication",
        365 * DAY_MS,
        ("inbox", "delivery"),
    ),
    TopicSpec(
        PATHWAY_ACTIONS,
        KeyKind.PATIENT_KEY,
        "coordinator action (ack, dismiss, note)",
        365 * DAY_MS,
        ("pathways stage", "audit"),
    ),
    TopicSpec(AUDIT, KeyKind.EVENT_ID, "FHIR AuditEvent", FOREVER, ("auditors",)),
    TopicSpec(
        KEYS_PATIENT,
        KeyKind.PATIENT_KEY,
        "wrapped per-patient data key",
        FOREVER,
        ("key service",),
        compacted=True,
    ),
    TopicSpec(
        DELIVERY_FAILED,
        KeyKind.PATIENT_KEY,
        "outbox record whose delivery failed N times",
        30 * DAY_MS,
        ("operators",),
    ),
    TopicSpec(
        ORGANISATIONS,
        KeyKind.ORGANISATION_ID,
        "an organisation's public registration (territory, endpoint, subscriptions, status)",
        FOREVER,
        ("share stage", "delivery"),
        compacted=True,
        partitions=1,
    ),
)


def catalogue(
    org_ids: Iterable[str] = (), studies: Iterable[tuple[str, int]] = ()
) -> list[TopicSpec]:
    """Every topic: the base topics, one outbox per organisation, one stream per study.

    `studies` gives (study id, retention in days).
    """
    specs = list(BASE_TOPICS)
    specs.extend(
        TopicSpec(
            outbox_topic(org),
            KeyKind.PATIENT_KEY,
            f"FHIR resources for {org}",
            30 * DAY_MS,
            (f"organisation {org}",),
        )
        for org in org_ids
    )
    specs.extend(
        TopicSpec(
            research_topic(study),
            KeyKind.STUDY_PSEUDONYM,
            "pseudonymised FHIR resource or retraction",
            days * DAY_MS,
            (f"study {study}",),
        )
        for study, days in studies
    )
    return specs
