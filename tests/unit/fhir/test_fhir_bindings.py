"""Required value-set bindings (FHIR R4 and R5), as a strict server checks them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from caremesh.fhir.bindings import binding_issues
from caremesh.fhir.ingest import process_ingest
from caremesh.fhir.validate import validate_resource

CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
SUBJECT = {"reference": "Patient/p1"}


def cc(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


CASES: list[tuple[str, dict[str, Any], str, str | None]] = [
    # (release, resource, element at fault or "" when valid, id)
    ("R4", {"resourceType": "Patient", "gender": "female"}, "", None),
    ("R4", {"resourceType": "Patient", "gender": "F"}, "Patient.gender", None),
    ("R5", {"resourceType": "Patient", "gender": "femme"}, "Patient.gender", None),
    (
        "R4",
        {"resourceType": "Patient", "link": [{"other": SUBJECT, "type": "same"}]},
        "Patient.link[0].type",
        None,
    ),
    (
        "R4",
        {"resourceType": "Observation", "status": "not-a-status", "code": {"text": "x"}},
        "Observation.status",
        None,
    ),
    ("R4", {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}, "", None),
    (
        "R4",
        {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}},
        "",
        None,
    ),
    (
        "R4",
        {"resourceType": "Encounter", "status": "completed", "class": {"code": "AMB"}},
        "Encounter.status",
        "R5 status in R4",
    ),
    (
        "R5",
        {"resourceType": "Encounter", "status": "finished"},
        "Encounter.status",
        "R4 status in R5",
    ),
    ("R5", {"resourceType": "Encounter", "status": "completed"}, "", None),
    (
        "R4",
        {
            "resourceType": "Condition",
            "subject": SUBJECT,
            "clinicalStatus": cc(CLINICAL, "active"),
            "verificationStatus": cc(VERIFICATION, "confirmed"),
        },
        "",
        None,
    ),
    (
        "R4",
        {"resourceType": "Condition", "subject": SUBJECT, "clinicalStatus": cc(CLINICAL, "bad")},
        "Condition.clinicalStatus",
        None,
    ),
    (
        "R4",
        {"resourceType": "Condition", "subject": SUBJECT, "clinicalStatus": {"text": "active"}},
        "Condition.clinicalStatus",
        "text only",
    ),
    (
        "R4",
        {
            "resourceType": "Condition",
            "subject": SUBJECT,
            "clinicalStatus": cc(CLINICAL, "unknown"),
        },
        "Condition.clinicalStatus",
        "R5 code in R4",
    ),
    (
        "R5",
        {
            "resourceType": "Condition",
            "subject": SUBJECT,
            "clinicalStatus": cc(CLINICAL, "unknown"),
        },
        "",
        None,
    ),
    (
        "R4",
        {
            "resourceType": "Condition",
            "subject": SUBJECT,
            "verificationStatus": cc(VERIFICATION, "maybe"),
        },
        "Condition.verificationStatus",
        None,
    ),
    (
        "R4",
        {
            "resourceType": "MedicationRequest",
            "status": "ended",
            "intent": "order",
            "subject": SUBJECT,
            "medicationCodeableConcept": {"text": "x"},
        },
        "MedicationRequest.status",
        None,
    ),
    (
        "R4",
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "wish",
            "subject": SUBJECT,
            "medicationCodeableConcept": {"text": "x"},
        },
        "MedicationRequest.intent",
        None,
    ),
    (
        "R4",
        {"resourceType": "DiagnosticReport", "status": "modified", "code": {"text": "x"}},
        "DiagnosticReport.status",
        None,
    ),
    (
        "R4",
        {"resourceType": "CarePlan", "status": "active", "intent": "directive", "subject": SUBJECT},
        "CarePlan.intent",
        None,
    ),
    (
        "R4",
        {"resourceType": "EpisodeOfCare", "status": "open", "patient": SUBJECT},
        "EpisodeOfCare.status",
        None,
    ),
    ("R4", {"resourceType": "CareTeam", "status": "running"}, "CareTeam.status", None),
    ("R4", {"resourceType": "Communication", "status": "sent"}, "Communication.status", None),
    (
        "R4",
        {
            "resourceType": "Consent",
            "status": "granted",
            "scope": {"text": "treatment"},
            "category": [{"text": "consent"}],
        },
        "Consent.status",
        None,
    ),
    (
        "R4",
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "contained": [{"resourceType": "Patient", "id": "c", "gender": "x"}],
        },
        "Observation.contained[0].gender",
        None,
    ),
]


@pytest.mark.parametrize(
    ("release", "resource", "where"),
    [case[:3] for case in CASES],
    ids=[case[3] or f"{case[1]['resourceType']} {case[0]} {case[2] or 'valid'}" for case in CASES],
)
def test_required_bindings(release: str, resource: dict[str, Any], where: str) -> None:
    family = "R5" if release == "R5" else "R4"
    issues = binding_issues(resource, family, resource["resourceType"])
    assert [issue.expression for issue in issues] == ([where] if where else [])
    result = process_ingest(orjson.dumps(resource), "synth-hosp", "m1", release, {})
    if where:
        assert result.rejection is not None
        assert result.rejection.code == "invalid-code"
        assert [issue.expression for issue in result.rejection.issues] == [where]
    else:
        assert result.rejection is None, result.rejection


def test_a_code_of_the_other_release_picks_that_release_when_none_is_named() -> None:
    r5 = {"resourceType": "Encounter", "status": "completed"}
    assert validate_resource(r5, None).release == "R5"
    r4 = {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}}
    assert validate_resource(r4, None).release == "R4B"


def test_bindings_inside_bundle_entries_name_the_entry() -> None:
    body = orjson.dumps(
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "resource": {"resourceType": "Patient", "gender": "male"},
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "resource": {"resourceType": "Patient", "gender": "xx"},
                    "request": {"method": "SEND", "url": "Patient"},
                },
            ],
        }
    )
    result = process_ingest(body, "synth-hosp", "m1", "R4", {})
    assert result.rejection is not None
    assert {issue.expression for issue in result.rejection.issues} == {
        "Bundle.entry[1].request.method",
        "Bundle.entry[1].resource.gender",
    }
    assert "xx" not in result.rejection.detail
    assert "SEND" not in result.rejection.detail
