"""Synthetic FHIR resources and a driver for pathway scenario tests (no real patient data)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from caremesh.envelope import PatientKey
from caremesh.pathways import AlertCandidate, Pathway, PatientPathwayState, evaluate, tick
from caremesh.pathways.definition import load_shipped_pathways

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
PATHWAY_CODES = "https://caremesh.example/fhir/CodeSystem/care-pathway"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

PATIENT = PatientKey("1990000000001")  # synthetic INS-shaped key
OTHER_PATIENT = PatientKey("demo-hospital/Patient/p-2")
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

SHIPPED = load_shipped_pathways()


def at(days: float = 0, hours: float = 0, seconds: float = 0) -> datetime:
    """T0 plus an offset."""
    return T0 + timedelta(days=days, hours=hours, seconds=seconds)


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def condition(
    ident: str,
    system: str,
    code: str,
    *,
    when: datetime = T0,
    verification: str | None = None,
    clinical: str = "active",
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Condition",
        "id": ident,
        "clinicalStatus": {"coding": [{"code": clinical}]},
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": "Patient/p-1"},
        "onsetDateTime": iso(when),
    }
    if verification:
        out["verificationStatus"] = {"coding": [{"code": verification}]}
    return out


def observation(
    ident: str,
    loinc: str,
    value: float,
    unit: str,
    *,
    when: datetime,
    status: str = "final",
    system: str | None = LOINC,
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": ident,
        "status": status,
        "code": {"coding": [{"system": system, "code": loinc}]},
        "subject": {"reference": "Patient/p-1"},
        "effectiveDateTime": iso(when),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def encounter(
    ident: str,
    cls: str,
    *,
    start: datetime,
    end: datetime | None = None,
    status: str | None = None,
    r5: bool = False,
) -> dict[str, Any]:
    period: dict[str, str] = {"start": iso(start)}
    if end is not None:
        period["end"] = iso(end)
    out: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": ident,
        "status": status or ("finished" if end else "in-progress"),
        "subject": {"reference": "Patient/p-1"},
    }
    if r5:
        out["class"] = [{"coding": [{"system": ACT_CODE, "code": cls}]}]
        out["actualPeriod"] = period
    else:
        out["class"] = {"system": ACT_CODE, "code": cls}
        out["period"] = period
    return out


def episode(ident: str, code: str, *, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "EpisodeOfCare",
        "id": ident,
        "status": status,
        "type": [{"coding": [{"system": PATHWAY_CODES, "code": code}]}],
        "patient": {"reference": "Patient/p-1"},
        "period": {"start": iso(T0)},
    }


def patient(birth_date: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p-1", "birthDate": birth_date}


Step = tuple[dict[str, Any], datetime]


def feed(
    pathway: Pathway,
    steps: Iterable[Step],
    state: PatientPathwayState | None = None,
    *,
    patient_key: PatientKey = PATIENT,
    round_trip: bool = False,
) -> tuple[PatientPathwayState, list[AlertCandidate]]:
    """Evaluate each (resource, now) in order; with round_trip, restart from JSON each step."""
    current = state or PatientPathwayState()
    raised: list[AlertCandidate] = []
    for resource, now in steps:
        if round_trip:
            current = PatientPathwayState.from_dict(json.loads(json.dumps(current.to_dict())))
        current, alerts = evaluate(pathway, current, resource, patient_key=patient_key, now=now)
        raised.extend(alerts)
    return current, raised


def feed_tick(
    pathway: Pathway, state: PatientPathwayState, now: datetime
) -> tuple[PatientPathwayState, list[AlertCandidate]]:
    return tick(pathway, state, now, patient_key=PATIENT)


def rules_of(alerts: Iterable[AlertCandidate]) -> list[str]:
    return [alert.rule_id for alert in alerts]
