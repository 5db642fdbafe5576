"""Synthetic FHIR Consent JSON (R4 and R5) and queries for the consent tests; no real data."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from caremesh.consent import ActorRef, DecisionQuery
from caremesh.envelope import PatientKey

ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
FHIR_TYPES = "http://hl7.org/fhir/fhir-types"
CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
CONSENT_CATEGORY = "http://terminology.hl7.org/CodeSystem/consentcategorycodes"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
INS = "urn:oid:1.2.250.1.213.1.4.8"

PATIENT = PatientKey("2990175123456")  # synthetic INS-shaped key
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

ORG_A = ActorRef(reference="Organization/org-a")
ORG_B = ActorRef(reference="Organization/org-b")
ORG_C_ID = ActorRef(identifier=f"{FINESS}|330000001")
ORG_D_ID = ActorRef(identifier=f"{FINESS}|330000002")
DR_X = ActorRef(reference="Practitioner/dr-x")


def _label_system(code: str) -> str:
    return CONFIDENTIALITY if code in {"U", "L", "M", "N", "R", "V"} else ACT_CODE


def actor(ref: ActorRef) -> dict[str, Any]:
    """A provision.actor naming `ref` (role: primary information recipient)."""
    who: dict[str, Any] = {}
    if ref.reference:
        who["reference"] = ref.reference
    if ref.identifier:
        system, _, value = ref.identifier.partition("|")
        who["identifier"] = {"system": system, "value": value}
    role = {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}
        ]
    }
    return {"role": role, "reference": who}


def provision(
    type_: str | None = None,
    *,
    actors: Iterable[ActorRef] = (),
    purposes: Iterable[str] = (),
    labels: Iterable[str] = (),
    types: Iterable[str] = (),
    actions: Iterable[str] = (),
    period: tuple[str | None, str | None] | None = None,
    data_period: tuple[str | None, str | None] | None = None,
    sub: Sequence[dict[str, Any]] = (),
    r5: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One provision; `r5` selects `resourceType` (R5) over `class` (R4), R5 has no `type`."""
    out: dict[str, Any] = {}
    if type_ is not None and not r5:
        out["type"] = type_
    if period is not None:
        out["period"] = {k: v for k, v in zip(("start", "end"), period, strict=True) if v}
    if acts := [actor(a) for a in actors]:
        out["actor"] = acts
    if acs := [{"coding": [{"system": CONSENT_ACTION, "code": a}]} for a in actions]:
        out["action"] = acs
    if labs := [{"system": _label_system(code), "code": code} for code in labels]:
        out["securityLabel"] = labs
    if pous := [{"system": ACT_REASON, "code": code} for code in purposes]:
        out["purpose"] = pous
    if rts := [{"system": FHIR_TYPES if r5 else RESOURCE_TYPES, "code": t} for t in types]:
        out["resourceType" if r5 else "class"] = rts
    if data_period is not None:
        out["dataPeriod"] = {k: v for k, v in zip(("start", "end"), data_period, strict=True) if v}
    if sub:
        out["provision"] = list(sub)
    out.update(extra or {})
    return out


def r4_consent(
    cid: str,
    root: dict[str, Any] | None,
    *,
    status: str = "active",
    recorded: str | None = "2024-01-01T09:00:00Z",
    scope: str = "patient-privacy",
) -> dict[str, Any]:
    """An R4 Consent with root provision `root`."""
    out: dict[str, Any] = {
        "resourceType": "Consent",
        "id": cid,
        "status": status,
        "scope": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": scope}
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": INS, "value": PATIENT}},
        "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTOUT"}]},
    }
    if recorded is not None:
        out["dateTime"] = recorded
    if root is not None:
        out["provision"] = root
    return out


def r5_consent(
    cid: str,
    decision: str | None,
    provisions: Sequence[dict[str, Any]] = (),
    *,
    status: str = "active",
    date: str | None = "2024-01-01",
    period: tuple[str | None, str | None] | None = None,
    category: str | None = None,
) -> dict[str, Any]:
    """An R5 Consent with root `decision` and exceptions `provisions` (built with r5=True).

    `category` adds a consent-category code (e.g. `research`, which declares a research consent).
    """
    out: dict[str, Any] = {
        "resourceType": "Consent",
        "id": cid,
        "status": status,
        "subject": {"reference": "Patient/p-1"},
    }
    if category is not None:
        out["category"] = [{"coding": [{"system": CONSENT_CATEGORY, "code": category}]}]
    if date is not None:
        out["date"] = date
    if decision is not None:
        out["decision"] = decision
    if period is not None:
        out["period"] = {k: v for k, v in zip(("start", "end"), period, strict=True) if v}
    if provisions:
        out["provision"] = list(provisions)
    return out


def withdrawal(cid: str, at: str, purpose: str | None = None) -> dict[str, Any]:
    """A caremesh withdrawal record for consent.events.v1."""
    out: dict[str, Any] = {"caremeshEvent": "consent-withdrawal", "consentId": cid, "at": at}
    if purpose is not None:
        out["purpose"] = purpose
    return out


def query(
    purpose: str = "TREAT",
    actor: ActorRef | None = ORG_A,
    *,
    resource_type: str | None = "Observation",
    labels: Iterable[str] = (),
    data_date: datetime | None = None,
    now: datetime = NOW,
    action: str = "disclose",
    custodian: ActorRef | None = None,
    resource: str | None = None,
    references: Iterable[str] | None = None,
) -> DecisionQuery:
    """A decision query for the synthetic patient."""
    return DecisionQuery(
        patient=PATIENT,
        purpose=purpose,
        now=now,
        actor=actor,
        resource_type=resource_type,
        security_labels=frozenset(labels),
        data_date=data_date,
        action=action,
        custodian=custodian,
        resource=resource,
        references=None if references is None else frozenset(references),
    )
