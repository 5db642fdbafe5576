"""FHIR R4 (4.0.1) JSON of the demo: patient load Bundles, Observations, Encounters, Consents.

Shapes follow FHIR R4 (they also validate as R4B, the models caremesh validates R4 with). Every
clinical resource points to its patient both by the hospital's local id and by the INS (system
`urn:oid:1.2.250.1.213.1.4.8`, DESIGN §3), so the patient key never depends on arrival order.
Consents follow FHIR R4 Consent: one root provision, purposes from v3 ActReason.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from caremesh.fhir.patient_key import INS_SYSTEM

if TYPE_CHECKING:
    from caremesh.demo.territory import Patient, Source

LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
ICD10: Final = "http://hl7.org/fhir/sid/icd-10"
UCUM: Final = "http://unitsofmeasure.org"
ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_REASON: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CONFIDENTIALITY: Final = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
CONDITION_CLINICAL: Final = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION: Final = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
BUNDLE_ID_SYSTEM: Final = "urn:caremesh:demo:bundle"
_NAMESPACE: Final = uuid.UUID("5d1f0e0a-3c55-5b7e-9a41-8f0c2d6b7e19")

PATHWAY_CONDITIONS: Final[dict[str, tuple[str, str, str, str]]] = {
    "heart-failure": ("84114007", "Heart failure", "I50.0", "Congestive heart failure"),
    "type2-diabetes": ("44054006", "Diabetes mellitus type 2", "E11.9", "Type 2 diabetes"),
    "copd": ("13645005", "Chronic obstructive lung disease", "J44.9", "COPD, unspecified"),
    "elderly-frailty": ("248279007", "Frailty", "R54", "Age-related physical debility"),
}
"""Pathway id → (SNOMED CT code, display, ICD-10 code, display) of its enrolling Condition."""
FALL: Final = ("217082002", "Accidental fall", "W19", "Unspecified fall")
RESTRICTED_CONDITION: Final = ("35489007", "Depressive disorder", "F32.9", "Depressive episode")


def stable_id(*parts: str) -> str:
    """A UUID derived from the parts: the same event always gets the same ids."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


def fhir_instant(when: datetime) -> str:
    """A FHIR dateTime with seconds and an explicit UTC offset."""
    return when.astimezone(UTC).replace(microsecond=0).isoformat()


def subject(patient: Patient) -> dict[str, Any]:
    """A Reference to the patient: local id and INS."""
    return {
        "reference": f"Patient/{patient.local_id}",
        "identifier": {"system": INS_SYSTEM, "value": patient.ins},
    }


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def patient_resource(patient: Patient, source: Source) -> dict[str, Any]:
    """The Patient as its hospital knows it: local id, INS, name, birth date, address."""
    return {
        "resourceType": "Patient",
        "id": patient.local_id,
        "identifier": [
            {"use": "usual", "system": f"urn:oid:{source.oid}", "value": patient.local_id},
            {"use": "official", "system": INS_SYSTEM, "value": patient.ins},
        ],
        "name": [{"use": "official", "family": patient.family, "given": [patient.given]}],
        "gender": patient.gender,
        "birthDate": patient.birth_date.isoformat(),
        "address": [
            {
                "use": "home",
                "line": [patient.line],
                "city": patient.city,
                "postalCode": patient.postal_code,
                "country": "FR",
            }
        ],
    }


def care_team(patient: Patient, when: datetime) -> dict[str, Any]:
    """The patient's CareTeam: one participant per organisation (`Organization/<id>`)."""
    return {
        "resourceType": "CareTeam",
        "id": stable_id("careteam", patient.ins),
        "status": "active",
        "subject": subject(patient),
        "period": {"start": fhir_instant(when)},
        "participant": [
            {"member": {"reference": f"Organization/{org}"}} for org in patient.care_team
        ],
    }


def condition(
    patient: Patient,
    codes: tuple[str, str, str, str],
    onset: datetime,
    *,
    key: str,
    restricted: bool = False,
    category: str = "problem-list-item",
) -> dict[str, Any]:
    """An active, confirmed Condition coded in SNOMED CT and ICD-10."""
    snomed, snomed_label, icd, icd_label = codes
    out: dict[str, Any] = {
        "resourceType": "Condition",
        "id": stable_id("condition", patient.ins, key),
    }
    if restricted:
        out["meta"] = {
            "security": [{"system": CONFIDENTIALITY, "code": "R", "display": "restricted"}]
        }
    out |= {
        "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
        "verificationStatus": {"coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed"}]},
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": category,
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {"system": SNOMED, "code": snomed, "display": snomed_label},
                {"system": ICD10, "code": icd, "display": icd_label},
            ],
            "text": snomed_label,
        },
        "subject": subject(patient),
        "onsetDateTime": fhir_instant(onset),
        "recordedDate": fhir_instant(onset),
    }
    return out


def load_bundle(
    patient: Patient, source: Source, when: datetime, onsets: dict[str, datetime]
) -> dict[str, Any]:
    """The initial load of one patient: a transaction Bundle of Patient, CareTeam, Conditions."""
    resources = [patient_resource(patient, source), care_team(patient, when)]
    for pathway in patient.pathways:
        resources.append(
            condition(patient, PATHWAY_CONDITIONS[pathway], onsets[pathway], key=pathway)
        )
    if patient.restricted:
        resources.append(
            condition(
                patient,
                RESTRICTED_CONDITION,
                onsets["restricted"],
                key="restricted",
                restricted=True,
            )
        )
    entries = []
    for res in resources:
        url = f"{res['resourceType']}/{res['id']}"
        entries.append(
            {
                "fullUrl": f"urn:uuid:{stable_id('entry', source.id, url)}",
                "resource": res,
                "request": {"method": "PUT", "url": url},
            }
        )
    return {
        "resourceType": "Bundle",
        "id": stable_id("bundle", source.id, patient.ins),
        "identifier": {"system": BUNDLE_ID_SYSTEM, "value": stable_id("load", patient.ins)},
        "type": "transaction",
        "timestamp": fhir_instant(when),
        "entry": entries,
    }


def observation(
    patient: Patient,
    code: tuple[str, str],
    value: float,
    unit: str,
    when: datetime,
    *,
    key: str,
    category: str = "vital-signs",
) -> dict[str, Any]:
    """A final Observation with a UCUM quantity (home monitoring or a ward measurement)."""
    loinc, display = code
    return {
        "resourceType": "Observation",
        "id": stable_id("observation", patient.ins, key),
        "status": "final",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category}]}],
        "code": _concept(LOINC, loinc, display),
        "subject": subject(patient),
        "effectiveDateTime": fhir_instant(when),
        "issued": fhir_instant(when),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def encounter(
    patient: Patient,
    klass: str,
    start: datetime,
    end: datetime,
    provider: str,
    *,
    key: str,
) -> dict[str, Any]:
    """A finished Encounter (AMB, HH, VR...) at `provider` (`Organization/<id>`)."""
    labels = {"AMB": "ambulatory", "HH": "home health", "VR": "virtual", "EMER": "emergency"}
    return {
        "resourceType": "Encounter",
        "id": stable_id("encounter", patient.ins, key),
        "status": "finished",
        "class": {"system": ACT_CODE, "code": klass, "display": labels.get(klass, klass)},
        "subject": subject(patient),
        "period": {"start": fhir_instant(start), "end": fhir_instant(end)},
        "serviceProvider": {"reference": f"Organization/{provider}"},
    }


def consent_id(patient: Patient, kind: str) -> str:
    """The id of one of the patient's consents (stable: the same consent is the same id)."""
    return "demo-" + stable_id("consent", patient.ins, kind)


def consent(
    patient: Patient,
    kind: str,
    recorded: datetime,
    *,
    outcome: str,
    purpose: str,
    actor: str | None = None,
) -> dict[str, Any]:
    """An active R4 Consent whose root provision permits or denies `purpose` (for `actor`)."""
    provision: dict[str, Any] = {"type": outcome, "period": {"start": fhir_instant(recorded)}}
    if actor is not None:
        provision["actor"] = [
            {
                "role": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "PRCP",
                        }
                    ]
                },
                "reference": {"reference": f"Organization/{actor}"},
            }
        ]
    provision["purpose"] = [{"system": ACT_REASON, "code": purpose}]
    scope = "research" if purpose == "HRESCH" else "patient-privacy"
    return {
        "resourceType": "Consent",
        "id": consent_id(patient, kind),
        "status": "active",
        "scope": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": scope}
            ]
        },
        "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
        "patient": {"identifier": {"system": INS_SYSTEM, "value": patient.ins}},
        "dateTime": fhir_instant(recorded),
        "policyRule": {
            "coding": [{"system": ACT_CODE, "code": "OPTIN" if outcome == "permit" else "OPTOUT"}]
        },
        "provision": provision,
    }
