"""Erasure (GDPR Art. 17): the ledger record, the audit record and the retraction reason.

An erasure of a patient is, all in one acknowledged write of the consent API
(`POST /Patient/$erase`):

1. the ledger record `{"caremeshEvent": "erasure", "at": <instant>}` on `consent.events.v1`,
   keyed by the patient key (`consent.parse.erasure_json`). Folded into consent state it leaves
   only the erasure marker, so every later decision for that patient, whatever the purpose or
   recipient, is deny with rule `erased`, forever (`consent.state.apply`, `consent.evaluate`);
2. a tombstone (null value) for the patient key on the compacted `keys.patient.v1`
   (crypto-shredding, DESIGN §5). That topic holds the patient's re-identification vault
   record (`caremesh.pseudonym.vault`): a per-patient AES-256 data key wrapped (AES-KW) under
   a key derived from the master key, and the study → pseudonym mapping sealed with it
   (AES-GCM). Every vault reader drops the record at the tombstone, so the pseudonyms can no
   longer be resolved, and compaction removes the older values from the log. Dead letters of
   the patient-keyed stages are sealed with the same data key (`caremesh.tables.deadletters`), so
   they become unreadable too; ingest dead letters, written before a patient is known, are
   not (docs/operators/gdpr.md);
3. an AuditEvent on `audit.v1` (`erasure_audit_event`).

The research stage, seeing the erasure on the ledger, sends a retraction with reason `erasure`
(`retraction_reason`) to every study that received the patient's data, and sends nothing more.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from caremesh.audit.events import (
    CONSENT_ADMIN_SYSTEM,
    DCM,
    ENTITY_TYPE,
    OBJECT_ROLE,
    PATIENT_KEY_SYSTEM,
    SOURCE_TYPE,
    SUCCESS,
)
from caremesh.consent.evaluate import Decision, Rule
from caremesh.envelope import PatientKey

REASON_ERASURE: Final = "erasure"
"""Retraction reason when the patient's data was erased (Art. 17)."""
REASON_WITHDRAWN: Final = "consent-withdrawn"
"""Retraction reason when consent for the study's purpose no longer permits."""

ERASURE_EVENT_TYPE: Final = "org.caremesh.consent.erasure"
"""CloudEvents `ce_type` of the erasure ledger record."""
KEY_TOMBSTONE_TYPE: Final = "org.caremesh.keys.patient.tombstone"
"""CloudEvents `ce_type` of the `keys.patient.v1` tombstone."""
VAULT_RECORD_TYPE: Final = "org.caremesh.keys.patient.vault"
"""CloudEvents `ce_type` of a sealed vault record on `keys.patient.v1`."""


def retraction_reason(decision: Decision) -> str:
    """Why a study must delete what it holds: `erasure` or `consent-withdrawn`."""
    return REASON_ERASURE if decision.rule is Rule.ERASED else REASON_WITHDRAWN


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def erasure_audit_event(
    patient: PatientKey,
    *,
    erased_at: datetime,
    event_id: str,
    recorded: datetime,
    observer: str,
    requestor: str | None = None,
) -> dict[str, Any]:
    """The FHIR R4 (4.0.1) AuditEvent of one erasure: DICOM 110110 Patient Record, action D.

    Goes to `audit.v1` (auditors only), so the patient key appears as an identifier of system
    `PATIENT_KEY_SYSTEM`, like in the other consent audit records; `requestor` is the consent
    administrator's configured name.
    """
    when = recorded if recorded.tzinfo else recorded.replace(tzinfo=UTC)
    agents: list[dict[str, Any]] = [
        {
            "type": {"coding": [_coding(DCM, "110150", "Application")]},
            "who": {"display": observer},
            "requestor": requestor is None,
        }
    ]
    if requestor is not None:
        agents.append(
            {
                "type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
                "who": {"identifier": {"system": CONSENT_ADMIN_SYSTEM, "value": requestor}},
                "requestor": True,
            }
        )
    return {
        "resourceType": "AuditEvent",
        "id": event_id,
        "type": _coding(DCM, "110110", "Patient Record"),
        "action": "D",
        "recorded": when.isoformat(),
        "outcome": SUCCESS,
        "outcomeDesc": "erased: consent ledger erasure, patient key tombstoned",
        "source": {
            "site": "caremesh",
            "observer": {"display": observer},
            "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
        },
        "agent": agents,
        "entity": [
            {
                "what": {"identifier": {"system": PATIENT_KEY_SYSTEM, "value": patient}},
                "type": _coding(ENTITY_TYPE, "1", "Person"),
                "role": _coding(OBJECT_ROLE, "1", "Patient"),
                "detail": [
                    {"type": "erasure", "valueString": erased_at.isoformat()},
                    {"type": "crypto-shredding", "valueString": "keys.patient.v1 tombstone"},
                ],
            }
        ],
    }
