"""FHIR R4 AuditEvent records (as dicts) for consent decisions, consent changes and deliveries.

Follows FHIR R4 (4.0.1) AuditEvent, and for decisions the pattern of IHE Basic Audit Log
Patterns (BALP 1.1) "AuthZconsent": type DICOM 110113 Security Alert, subtype AuthZ-Consent,
action E, outcome 0 for permit and 8 for deny. Consent changes use DICOM 110110 Patient Record,
deliveries DICOM 110106 Export. These records go to `audit.v1`, which only auditors read: the
patient key is allowed there (as an identifier of system `PATIENT_KEY_SYSTEM`), and texts carry
codes, never clinical values.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from caremesh.consent import purpose as pou
from caremesh.consent.evaluate import Decision, DecisionQuery
from caremesh.consent.model import (
    ActorRef,
    ConsentEvent,
    ConsentStatus,
    ConsentUpserted,
    Outcome,
)
from caremesh.envelope import MessageId, PatientKey
from caremesh.pathways.alert import CoordinatorAction
from caremesh.pseudonym.values import PSEUDONYM_SYSTEM

DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
BALP_AUTHZ: Final = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType"
OUTCOME_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/audit-event-outcome"
ENTITY_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE: Final = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE: Final = "http://terminology.hl7.org/CodeSystem/security-source-type"
PATIENT_KEY_SYSTEM: Final = "urn:caremesh:patient-key"
"""Identifier system of the caremesh patient key (DESIGN §3) in audit records."""
CONSENT_ADMIN_SYSTEM: Final = "urn:caremesh:consent-admin"
"""Identifier system of a configured consent administrator (by name) in audit records."""

SUCCESS: Final = "0"
SERIOUS_FAILURE: Final = "8"


REIDENTIFIER_SYSTEM: Final = "urn:caremesh:reidentifier"
"""Identifier system of the holders of the re-identifier role (consent API)."""
REIDENTIFY_OBSERVER: Final = "caremesh-consent-api"
INBOX_USER_SYSTEM: Final = "urn:caremesh:inbox-user"
"""Identifier system of the coordinators signed in to the inbox."""
INBOX_OBSERVER: Final = "caremesh-inbox"
USER_ROLE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
OPERATOR_SYSTEM: Final = "urn:caremesh:operator"
"""Identifier system of the operators using `caremesh deadletter`."""


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display is not None:
        out["display"] = display
    return out


def _purpose_concept(code: str) -> dict[str, Any]:
    return {"coding": [_coding(pou.ACT_REASON_SYSTEM, code, pou.DISPLAY.get(code))]}


def _who(actor: ActorRef) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if actor.reference is not None:
        out["reference"] = actor.reference
    if actor.identifier is not None:
        system, _, value = actor.identifier.partition("|")
        out["identifier"] = {"system": system, "value": value} if system else {"value": value}
    return out


def _patient_entity(patient: PatientKey) -> dict[str, Any]:
    return {
        "what": {"identifier": {"system": PATIENT_KEY_SYSTEM, "value": patient}},
        "type": _coding(ENTITY_TYPE, "1", "Person"),
        "role": _coding(OBJECT_ROLE, "1", "Patient"),
    }


def _consent_entity(consent_id: str, details: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {
        "what": {"reference": f"Consent/{consent_id}"},
        "type": _coding(ENTITY_TYPE, "2", "System Object"),
        "role": _coding(OBJECT_ROLE, "13", "Security Resource"),
    }
    if details:
        out["detail"] = [{"type": t, "valueString": v} for t, v in details]
    return out


def _caremesh_agent(observer: str, dcm_code: str, display: str) -> dict[str, Any]:
    return {
        "type": {"coding": [_coding(DCM, dcm_code, display)]},
        "who": {"display": observer},
        "requestor": True,
    }


def _recipient_agent(actor: ActorRef, purpose: str) -> dict[str, Any]:
    return {
        "type": {"coding": [_coding(DCM, "110152", "Destination Role ID")]},
        "who": _who(actor),
        "requestor": False,
        "purposeOfUse": [_purpose_concept(purpose)],
    }


def _base(
    event_id: str, recorded: datetime, observer: str, type_: dict[str, str], action: str
) -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "id": event_id,
        "type": type_,
        "action": action,
        "recorded": (recorded if recorded.tzinfo else recorded.replace(tzinfo=UTC)).isoformat(),
        "source": {
            "site": "caremesh",
            "observer": {"display": observer},
            "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
        },
    }


def decision_audit_event(
    query: DecisionQuery, decision: Decision, *, event_id: str, recorded: datetime, observer: str
) -> dict[str, Any]:
    """The AuditEvent of one consent decision (BALP AuthZconsent pattern)."""
    event = _base(event_id, recorded, observer, _coding(DCM, "110113", "Security Alert"), "E")
    event["subtype"] = [
        _coding(BALP_AUTHZ, "AuthZ-Consent", "Authorization Decision using Roles and Consent")
    ]
    permitted = decision.outcome is Outcome.PERMIT
    event["outcome"] = SUCCESS if permitted else SERIOUS_FAILURE
    event["outcomeDesc"] = f"{decision.outcome.value}: {decision.rule.value}"
    event["purposeOfEvent"] = [_purpose_concept(decision.purpose)]
    agents = [_caremesh_agent(observer, "110150", "Application")]
    if query.actor is not None:
        agents.append(_recipient_agent(query.actor, decision.purpose))
    event["agent"] = agents
    details = [("rule", decision.rule.value)]
    if decision.provision is not None:
        details.append(("provision", decision.provision))
    entities = [_patient_entity(query.patient)]
    entities.extend(_consent_entity(cid, details) for cid in decision.consent_ids)
    if query.resource_type is not None:
        entities.append(
            {
                "type": _coding(ENTITY_TYPE, "2", "System Object"),
                "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
                "name": query.resource_type,
            }
        )
    event["entity"] = entities
    return event


def consent_change_audit_event(
    event: ConsentEvent,
    patient: PatientKey,
    *,
    event_id: str,
    recorded: datetime,
    observer: str,
    requestor: str | None = None,
) -> dict[str, Any]:
    """The AuditEvent of one consent ledger event (upsert, removal or withdrawal).

    `requestor` names who asked for the change (a configured consent administrator's name),
    recorded as a requesting agent with identifier system `CONSENT_ADMIN_SYSTEM`.
    """
    if isinstance(event, ConsentUpserted):
        consent_id = event.consent.id
        removed = event.consent.status is ConsentStatus.ENTERED_IN_ERROR
        action = "D" if removed else "U"
        details = [("status", event.consent.status.value), ("release", event.consent.release.value)]
        purposes: tuple[str, ...] = ()
    else:
        consent_id = event.consent_id
        action = "U"
        details = [("withdrawal", event.at.isoformat())]
        purposes = (event.purpose,) if event.purpose is not None else ()
    out = _base(event_id, recorded, observer, _coding(DCM, "110110", "Patient Record"), action)
    out["outcome"] = SUCCESS
    if purposes:
        out["purposeOfEvent"] = [_purpose_concept(p) for p in purposes]
    agents = [_caremesh_agent(observer, "110150", "Application")]
    if requestor is not None:
        agents[0]["requestor"] = False
        agents.append(
            {
                "type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
                "who": {"identifier": {"system": CONSENT_ADMIN_SYSTEM, "value": requestor}},
                "requestor": True,
            }
        )
    out["agent"] = agents
    out["entity"] = [_patient_entity(patient), _consent_entity(consent_id, details)]
    return out


def delivery_audit_event(
    *,
    patient: PatientKey,
    recipient: ActorRef,
    purpose: str,
    message_id: MessageId,
    resource: str | None,
    consent_ids: Sequence[str],
    error_code: str | None,
    event_id: str,
    recorded: datetime,
    observer: str,
) -> dict[str, Any]:
    """The AuditEvent of one delivery to a recipient (`error_code` None means delivered)."""
    out = _base(event_id, recorded, observer, _coding(DCM, "110106", "Export"), "R")
    out["outcome"] = SUCCESS if error_code is None else SERIOUS_FAILURE
    out["outcomeDesc"] = "delivered" if error_code is None else f"failed: {error_code}"
    out["purposeOfEvent"] = [_purpose_concept(purpose)]
    out["agent"] = [
        _caremesh_agent(observer, "110153", "Source Role ID"),
        _recipient_agent(recipient, purpose),
    ]
    data: dict[str, Any] = {
        "type": _coding(ENTITY_TYPE, "2", "System Object"),
        "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
        "detail": [{"type": "ce_id", "valueString": message_id}],
    }
    if resource is not None:
        data["what"] = {"reference": resource}
    out["entity"] = [
        _patient_entity(patient),
        data,
        *(_consent_entity(cid) for cid in consent_ids),
    ]
    return out


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


def reidentification_audit_event(
    *,
    study: str,
    pseudonym: str,
    patient: PatientKey,
    reason: str,
    reidentifier: str,
    event_id: str,
    recorded: datetime,
) -> dict[str, Any]:
    """The FHIR R4 (4.0.1) AuditEvent of one disclosure: DICOM 110110 Patient Record, action R.

    Goes to `audit.v1` (auditors only): who (the re-identifier), when, the study, the stated
    reason, and both the pseudonym and the patient key it resolved to.
    """
    return {
        "resourceType": "AuditEvent",
        "id": event_id,
        "type": {"system": DCM, "code": "110110", "display": "Patient Record"},
        "subtype": [
            {"system": "urn:caremesh:audit-subtype", "code": "reidentification"},
        ],
        "action": "R",
        "recorded": recorded.isoformat(),
        "outcome": SUCCESS,
        "outcomeDesc": "re-identified: study pseudonym resolved through the vault",
        "purposeOfEvent": [{"text": reason}],
        "source": {"site": "caremesh", "observer": {"display": REIDENTIFY_OBSERVER}},
        "agent": [
            {
                "type": {
                    "coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]
                },
                "who": {"identifier": {"system": REIDENTIFIER_SYSTEM, "value": reidentifier}},
                "requestor": True,
                "purposeOfUse": [{"text": reason}],
            }
        ],
        "entity": [
            {
                "what": {"identifier": {"system": PATIENT_KEY_SYSTEM, "value": patient}},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            },
            {
                "what": {
                    "identifier": {
                        "system": PSEUDONYM_SYSTEM.format(study=study),
                        "value": pseudonym,
                    }
                },
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "detail": [
                    {"type": "study", "valueString": study},
                    {"type": "reason", "valueString": reason},
                ],
            },
        ],
    }


def action_audit_event(
    action: CoordinatorAction, patient_key: str, *, event_id: str, recorded: datetime
) -> dict[str, Any]:
    """The AuditEvent of a coordinator's action on an alert."""
    coding = {"system": DCM, "code": "110110", "display": "Patient Record"}
    details = [
        {"type": "action", "valueString": action.action},
        {"type": "pathway", "valueString": action.pathway_id},
        {"type": "note", "valueString": "present" if action.note else "absent"},
    ]
    agent: dict[str, Any] = {
        "type": {
            "coding": [{"system": USER_ROLE_SYSTEM, "code": "humanuser", "display": "human user"}]
        },
        "who": {"identifier": {"system": INBOX_USER_SYSTEM, "value": action.coordinator}},
        "requestor": True,
        "purposeOfUse": [
            {"coding": [{"system": pou.ACT_REASON_SYSTEM, "code": "TREAT"}]},
        ],
    }
    if action.organization is not None:
        agent["who"]["display"] = action.organization
    return {
        "resourceType": "AuditEvent",
        "id": event_id,
        "type": coding,
        "action": "U",
        "recorded": recorded.isoformat(),
        "outcome": "0",
        "outcomeDesc": f"alert {action.action}",
        "purposeOfEvent": [{"coding": [{"system": pou.ACT_REASON_SYSTEM, "code": "TREAT"}]}],
        "agent": [
            agent,
            {
                "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
                "who": {"display": INBOX_OBSERVER},
                "requestor": False,
            },
        ],
        "source": {
            "site": "caremesh",
            "observer": {"display": INBOX_OBSERVER},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": [
            {
                "what": {"identifier": {"system": PATIENT_KEY_SYSTEM, "value": patient_key}},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            },
            {
                "what": {"reference": f"Communication/{action.alert_id}"},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
                "detail": details,
            },
        ],
    }


def view_audit_event(
    record: str, operator: str, reason: str, patient: PatientKey | None, event_id: str
) -> dict[str, Any]:
    """The FHIR R4 AuditEvent of an operator viewing one dead letter's payload.

    `record` names the Kafka record (`TOPIC:PARTITION:OFFSET`).
    """
    entities: list[dict[str, Any]] = [
        {
            "what": {"identifier": {"system": "urn:caremesh:kafka-record", "value": record}},
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "detail": [{"type": "reason", "valueString": reason}],
        }
    ]
    if patient is not None:
        entities.insert(
            0,
            {
                "what": {"identifier": {"system": PATIENT_KEY_SYSTEM, "value": patient}},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            },
        )
    return {
        "resourceType": "AuditEvent",
        "id": event_id,
        "type": {"system": DCM, "code": "110110", "display": "Patient Record"},
        "subtype": [{"system": "urn:caremesh:audit-subtype", "code": "deadletter-view"}],
        "action": "R",
        "recorded": datetime.now(UTC).isoformat(),
        "outcome": SUCCESS,
        "outcomeDesc": "an operator viewed a dead letter's payload",
        "purposeOfEvent": [{"text": reason}],
        "source": {"site": "caremesh", "observer": {"display": "caremesh deadletter show"}},
        "agent": [
            {
                "type": {
                    "coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]
                },
                "who": {"identifier": {"system": OPERATOR_SYSTEM, "value": operator}},
                "requestor": True,
            }
        ],
        "entity": entities,
    }
