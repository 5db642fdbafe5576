"""The local HAPI FHIR server (local/hapi) behaves as a strict provider's FHIR server does."""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.hapi import Hapi, errors

INS = "urn:oid:1.2.250.1.213.1.4.8"


def patient(hapi: Hapi, id_: str | None = None, family: str = "Martin") -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": INS, "value": hapi.unique("ins")}],
        "name": [{"family": family, "given": ["Alice"]}],
        "gender": "female",
        "birthDate": "1970-01-01",
    }
    if id_ is not None:
        resource["id"] = id_
    return resource


def observation(subject: str, status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2026-12-01T10:00:00+01:00",
        "valueQuantity": {
            "value": 72,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def test_a_valid_patient_put_is_accepted_and_read_back(hapi_r4: Hapi) -> None:
    body = patient(hapi_r4, hapi_r4.unique("p"))
    response = hapi_r4.put(body)
    assert response.status_code == 201, response.text
    stored = hapi_r4.read("Patient", body["id"])
    assert stored is not None
    assert stored["identifier"] == body["identifier"]
    assert stored["meta"]["versionId"] == "1"
    body["name"][0]["family"] = "Martin-Durand"
    assert hapi_r4.put(body).status_code == 200
    versions = hapi_r4.history("Patient", body["id"])
    assert [v["name"][0]["family"] for v in versions] == ["Martin-Durand", "Martin"]


def test_an_observation_with_an_unknown_status_is_refused_by_the_validator(hapi_r4: Hapi) -> None:
    subject = patient(hapi_r4, hapi_r4.unique("p"))
    assert hapi_r4.put(subject).status_code == 201
    response = hapi_r4.post(observation(f"Patient/{subject['id']}", status="not-a-status"))
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any("Observation.status" in e for e in errors(outcome)), errors(outcome)


def test_a_duplicated_json_key_is_refused(hapi_r4: Hapi) -> None:
    text = '{"resourceType":"Observation","status":"final","status":"amended","code":{"text":"x"}}'
    response = hapi_r4.client.post(
        f"{hapi_r4.base_url}/Observation",
        content=text,
        headers={"Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 422
    assert any("duplicate" in e for e in errors(response.json()))


def test_a_reference_to_a_patient_the_server_does_not_hold_is_refused(hapi_r4: Hapi) -> None:
    missing = hapi_r4.unique("absent")
    response = hapi_r4.post(observation(f"Patient/{missing}"))
    assert response.status_code == 422, response.text
    assert f"Patient/{missing}" in errors(response.json())[0]
    assert hapi_r4.search("Observation", subject=f"Patient/{missing}") == []


def test_a_placeholder_reference_outside_a_bundle_is_refused(hapi_r4: Hapi) -> None:
    response = hapi_r4.post(observation(f"urn:uuid:{uuid.uuid4()}"))
    assert response.status_code == 422


def test_a_transaction_bundle_with_urn_uuid_references_is_resolved(hapi_r4: Hapi) -> None:
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    obs_url = f"urn:uuid:{uuid.uuid4()}"
    body = patient(hapi_r4)
    ins = body["identifier"][0]["value"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            # The Observation comes first: references resolve whatever the entries' order.
            {
                "fullUrl": obs_url,
                "resource": observation(patient_url),
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "fullUrl": patient_url,
                "resource": body,
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    response = hapi_r4.post(bundle, path="")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    [stored] = hapi_r4.by_identifier("Patient", INS, ins)
    [obs] = hapi_r4.search("Observation", patient=f"Patient/{stored['id']}")
    assert obs["subject"]["reference"] == f"Patient/{stored['id']}"
    assert result["entry"][0]["response"]["location"].startswith(f"Observation/{obs['id']}/")
    assert hapi_r4.search("Observation", **{"patient.identifier": f"{INS}|{ins}"}) == [obs]


def test_a_transaction_is_applied_whole_or_not_at_all(hapi_r4: Hapi) -> None:
    body = patient(hapi_r4)
    ins = body["identifier"][0]["value"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": body,
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": observation(f"Patient/{hapi_r4.unique('absent')}"),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    response = hapi_r4.post(bundle, path="")
    assert response.status_code == 422, response.text
    assert hapi_r4.by_identifier("Patient", INS, ins) == []


def test_conditional_update_by_identifier_matches_the_existing_patient(hapi_r4: Hapi) -> None:
    existing = patient(hapi_r4, hapi_r4.unique("p"))
    assert hapi_r4.put(existing).status_code == 201
    ins = existing["identifier"][0]["value"]
    update = patient(hapi_r4, family="Bernard")
    update["identifier"] = existing["identifier"]
    response = hapi_r4.client.put(
        f"{hapi_r4.base_url}/Patient",
        params={"identifier": f"{INS}|{ins}"},
        json=update,
        headers={"Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 200, response.text
    [stored] = hapi_r4.by_identifier("Patient", INS, ins)
    assert stored["id"] == existing["id"]
    assert stored["name"][0]["family"] == "Bernard"
    assert stored["meta"]["versionId"] == "2"


def test_conditional_create_in_a_transaction_reuses_the_matching_patient(hapi_r4: Hapi) -> None:
    existing = patient(hapi_r4, hapi_r4.unique("p"))
    assert hapi_r4.put(existing).status_code == 201
    ins = existing["identifier"][0]["value"]
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_url,
                "resource": patient(hapi_r4),
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier={INS}|{ins}",
                },
            },
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": observation(patient_url),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    response = hapi_r4.post(bundle, path="")
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["status"] == "200 OK"
    assert len(hapi_r4.by_identifier("Patient", INS, ins)) == 1
    [obs] = hapi_r4.search("Observation", subject=f"Patient/{existing['id']}")
    assert obs["subject"]["reference"] == f"Patient/{existing['id']}"


def test_validate_reports_errors_for_an_invalid_resource_and_none_for_a_valid_one(
    hapi_r4: Hapi,
) -> None:
    valid = patient(hapi_r4)
    assert hapi_r4.validate(valid) == []
    invalid = dict(valid, gender="woman")
    problems = hapi_r4.validate(invalid)
    assert problems
    assert all("Patient.gender" in p for p in problems), problems
    not_an_oid = dict(valid, identifier=[{"system": "urn:oid:not-an-oid", "value": "1"}])
    assert hapi_r4.validate(not_an_oid)
    # $validate only judges: nothing was stored.
    assert hapi_r4.search("Patient", identifier=f"{INS}|{valid['identifier'][0]['value']}") == []


def test_an_r5_server_validates_against_r5(hapi_r5: Hapi) -> None:
    r5_encounter = {
        "resourceType": "Encounter",
        "status": "completed",
        "class": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "AMB",
                    }
                ]
            }
        ],
        "actualPeriod": {"start": "2026-12-01T10:00:00+01:00"},
    }
    assert hapi_r5.validate(r5_encounter) == []
    r4_encounter = {
        "resourceType": "Encounter",
        "status": "finished",  # R4's code; R5 calls it "completed"
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "period": {"start": "2026-12-01T10:00:00+01:00"},
    }
    assert hapi_r5.validate(r4_encounter)
    body = patient(hapi_r5, hapi_r5.unique("p"))
    assert hapi_r5.put(body).status_code == 201
