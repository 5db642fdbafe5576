"""Patient keys (DESIGN §3): INS, references, learned mappings, source-scoped fallbacks."""

from __future__ import annotations

from typing import Any

import pytest

from caremesh.envelope import PatientKey
from caremesh.fhir.patient_key import (
    INS_SYSTEM,
    KeyResult,
    LearnedMapping,
    find_ins,
    patient_key,
    source_patient_key,
)

SRC = "synth-hosp"
INS = "100000000000017"
OTHER_INS = "200000000000029"
LEARNED = {f"{SRC}/Patient/p-known": OTHER_INS}


def ins(value: str = INS) -> dict[str, str]:
    return {"system": INS_SYSTEM, "value": value}


def obs(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "o1", **elements}


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # Patient itself
    (
        "patient with INS",
        {"resourceType": "Patient", "id": "p1", "identifier": [{"value": "L1"}, ins()]},
        INS,
        "ins",
    ),
    ("patient learned", {"resourceType": "Patient", "id": "p-known"}, OTHER_INS, "learned"),
    ("patient fallback", {"resourceType": "Patient", "id": "p2"}, f"{SRC}/Patient/p2", "source"),
    (
        "patient INS of another system ignored",
        {"resourceType": "Patient", "id": "p3", "identifier": [{"system": "urn:x", "value": INS}]},
        f"{SRC}/Patient/p3",
        "source",
    ),
    (
        "patient INS with separators ignored",
        {"resourceType": "Patient", "id": "p4", "identifier": [ins("1/Patient/2")]},
        f"{SRC}/Patient/p4",
        "source",
    ),
    # logical and literal references
    ("subject identifier INS", obs(subject={"identifier": ins()}), INS, "ins"),
    (
        "INS wins over the literal reference",
        obs(subject={"reference": "Patient/p-known", "identifier": ins()}),
        INS,
        "ins",
    ),
    ("subject learned", obs(subject={"reference": "Patient/p-known"}), OTHER_INS, "learned"),
    ("subject fallback", obs(subject={"reference": "Patient/p9"}), f"{SRC}/Patient/p9", "source"),
    (
        "absolute versioned reference",
        obs(subject={"reference": "https://ehr.example/fhir/Patient/p9/_history/3"}),
        f"{SRC}/Patient/p9",
        "source",
    ),
    (
        "conditional reference",
        obs(subject={"reference": f"Patient?identifier={INS_SYSTEM}|{INS}"}),
        INS,
        "ins",
    ),
    (
        "url-encoded conditional reference",
        obs(subject={"reference": f"Patient?identifier={INS_SYSTEM}%7C{INS}"}),
        INS,
        "ins",
    ),
    (
        "conditional reference on another identifier",
        obs(subject={"reference": "Patient?identifier=urn:x|42"}),
        f"{SRC}/Observation/o1",
        "non-patient",
    ),
    (
        "group subject",
        obs(subject={"reference": "Group/g1"}),
        f"{SRC}/Observation/o1",
        "non-patient",
    ),
    (
        "subject typed as Device",
        obs(subject={"type": "Device", "reference": "Patient/p9"}),
        f"{SRC}/Observation/o1",
        "non-patient",
    ),
    (
        "dangling urn:uuid",
        obs(subject={"reference": "urn:uuid:6f0e1b2a-0000-4000-8000-000000000001"}),
        f"{SRC}/Observation/o1",
        "non-patient",
    ),
    # other patient-pointing elements
    (
        "Coverage.beneficiary",
        {"resourceType": "Coverage", "id": "c1", "beneficiary": {"reference": "Patient/p9"}},
        f"{SRC}/Patient/p9",
        "source",
    ),
    (
        "Claim.patient",
        {"resourceType": "Claim", "id": "c1", "patient": {"identifier": ins()}},
        INS,
        "ins",
    ),
    (
        "Consent R4 patient",
        {"resourceType": "Consent", "id": "c1", "patient": {"reference": "Patient/p-known"}},
        OTHER_INS,
        "learned",
    ),
    (
        "Task.for",
        {"resourceType": "Task", "id": "t1", "for": {"reference": "Patient/p9"}},
        f"{SRC}/Patient/p9",
        "source",
    ),
    (
        "Account.subject list skips a Device",
        {
            "resourceType": "Account",
            "id": "a1",
            "subject": [{"reference": "Device/d1"}, {"reference": "Patient/p9"}],
        },
        f"{SRC}/Patient/p9",
        "source",
    ),
    (
        "Appointment participant actor",
        {
            "resourceType": "Appointment",
            "id": "ap1",
            "participant": [
                {"actor": {"reference": "Practitioner/dr1"}},
                {"actor": {"reference": "Patient/p9"}},
            ],
        },
        f"{SRC}/Patient/p9",
        "source",
    ),
    # no patient at all
    (
        "Organization",
        {"resourceType": "Organization", "id": "org1"},
        f"{SRC}/Organization/org1",
        "non-patient",
    ),
    (
        "Practitioner",
        {"resourceType": "Practitioner", "id": "dr1"},
        f"{SRC}/Practitioner/dr1",
        "non-patient",
    ),
]


@pytest.mark.parametrize(
    ("resource", "key", "kind"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_patient_key(resource: dict[str, Any], key: str, kind: str) -> None:
    found = patient_key(resource, SRC, LEARNED)
    assert (found.key, found.kind) == (key, kind)


def test_patient_with_ins_teaches_the_mapping() -> None:
    found = patient_key({"resourceType": "Patient", "id": "p1", "identifier": [ins()]}, SRC, {})
    assert found.learn == LearnedMapping(f"{SRC}/Patient/p1", PatientKey(INS))


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Patient", "id": "p1"},
        {"resourceType": "Patient", "identifier": [ins()]},
        obs(subject={"identifier": ins()}),
    ],
)
def test_only_a_patient_with_ins_and_id_teaches(resource: dict[str, Any]) -> None:
    assert patient_key(resource, SRC, {}).learn is None


def test_resource_without_id_uses_the_fallback_id() -> None:
    found = patient_key({"resourceType": "Organization"}, SRC, {}, fallback_id="msg-7")
    assert found.key == f"{SRC}/Organization/msg-7"
    patient = patient_key({"resourceType": "Patient"}, SRC, {}, fallback_id="msg-8")
    assert patient.key == f"{SRC}/Patient/msg-8"


def test_bundle_patients_resolve_urn_uuid_and_relative_references() -> None:
    bundle_patient = KeyResult(
        PatientKey(INS), "ins", LearnedMapping(f"{SRC}/Patient/p1", PatientKey(INS))
    )
    patients = {"urn:uuid:6f0e1b2a-0000-4000-8000-000000000001": bundle_patient}
    patients["Patient/p1"] = bundle_patient
    via_uuid = obs(subject={"reference": "urn:uuid:6f0e1b2a-0000-4000-8000-000000000001"})
    via_id = obs(subject={"reference": "Patient/p1"})
    for resource in (via_uuid, via_id):
        found = patient_key(resource, SRC, {}, bundle_patients=patients)
        assert (found.key, found.kind, found.learn) == (INS, "ins", None)


def test_source_scopes_the_fallback() -> None:
    resource = obs(subject={"reference": "Patient/p9"})
    assert patient_key(resource, "a", {}).key != patient_key(resource, "b", {}).key
    assert source_patient_key("a", "p9") == "a/Patient/p9"


@pytest.mark.parametrize(
    ("identifiers", "expected"),
    [
        ([ins()], INS),
        (ins(), INS),
        ([{"system": "urn:x", "value": "1"}, ins(OTHER_INS)], OTHER_INS),
        ([{"system": INS_SYSTEM}], None),
        ([{"system": INS_SYSTEM, "value": 15}], None),
        ("not a list", None),
        (None, None),
    ],
)
def test_find_ins(identifiers: object, expected: str | None) -> None:
    assert find_ins(identifiers) == expected
