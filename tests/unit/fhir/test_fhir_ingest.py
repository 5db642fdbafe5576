"""process_ingest: Bundle splitting, stable child ids, keys inside a Bundle, atomic rejection."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from caremesh.envelope import child_message_id
from caremesh.fhir.ingest import process_ingest
from caremesh.fhir.patient_key import INS_SYSTEM

SRC = "synth-hosp"
MSG = "3f2b5c1e-7a44-5d0e-9c1b-0a1b2c3d4e5f"
INS = "100000000000017"
PATIENT_URL = "urn:uuid:6f0e1b2a-0000-4000-8000-000000000001"


def observation(subject: str, code: str = "29463-7") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 82.5, "unit": "kg"},
    }


def patient(pid: str, *identifiers: dict[str, str]) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": pid}
    if identifiers:
        resource["identifier"] = list(identifiers)
    return resource


def bundle(*entries: dict[str, Any], kind: str = "transaction") -> bytes:
    return orjson.dumps({"resourceType": "Bundle", "type": kind, "entry": list(entries)})


def entry(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"resource": resource}
    if full_url:
        out["fullUrl"] = full_url
    return out


INS_ID = {"system": INS_SYSTEM, "value": INS}
MIXED = bundle(
    entry(observation(PATIENT_URL), "urn:uuid:6f0e1b2a-0000-4000-8000-000000000002"),
    {"request": {"method": "DELETE", "url": "Observation/old"}},
    entry(patient("p1", INS_ID), PATIENT_URL),
    entry({"resourceType": "Organization", "id": "org1", "name": "Synth Org"}),
)


def test_bundle_is_split_in_entry_order_with_stable_child_ids() -> None:
    first = process_ingest(MIXED, SRC, MSG, None, {})
    second = process_ingest(MIXED, SRC, MSG, None, {})
    assert first == second
    assert [r.resource_type for r in first.records] == ["Observation", "Patient", "Organization"]
    assert [r.index for r in first.records] == [0, 2, 3]
    assert [r.message_id for r in first.records] == [
        child_message_id(MSG, 0),
        child_message_id(MSG, 2),
        child_message_id(MSG, 3),
    ]
    assert len({r.message_id for r in first.records}) == 3


def test_entry_values_are_the_resolved_entry_resources() -> None:
    result = process_ingest(MIXED, SRC, MSG, None, {})
    entries = orjson.loads(MIXED)["entry"]
    observation_entry = entries[0]["resource"] | {
        "id": "6f0e1b2a-0000-4000-8000-000000000002",
        "subject": {"reference": "Patient/p1"},
    }
    assert [orjson.loads(r.value) for r in result.records] == [
        observation_entry,
        entries[2]["resource"],
        entries[3]["resource"],
    ]


def test_entries_pointing_to_a_bundle_patient_get_its_key() -> None:
    result = process_ingest(MIXED, SRC, MSG, None, {})
    keys = [(r.key, r.key_kind) for r in result.records]
    assert keys == [(INS, "ins"), (INS, "ins"), (f"{SRC}/Organization/org1", "non-patient")]


@pytest.mark.parametrize(
    "subject",
    [PATIENT_URL, "Patient/p1", "https://ehr.example/fhir/Patient/p1"],
)
def test_bundle_patient_without_ins_keys_its_entries_by_source(subject: str) -> None:
    body = bundle(entry(patient("p1"), PATIENT_URL), entry(observation(subject)))
    result = process_ingest(body, SRC, MSG, None, {})
    assert [r.key for r in result.records] == [f"{SRC}/Patient/p1"] * 2


def test_bundle_patient_with_a_learned_ins_keys_its_entries_by_ins() -> None:
    body = bundle(entry(patient("p1"), PATIENT_URL), entry(observation(PATIENT_URL)))
    result = process_ingest(body, SRC, MSG, None, {f"{SRC}/Patient/p1": INS})
    assert [(r.key, r.key_kind) for r in result.records] == [(INS, "learned")] * 2
    assert result.learned == ()


def test_new_mappings_are_returned_once_and_not_when_known() -> None:
    result = process_ingest(MIXED, SRC, MSG, None, {})
    assert [(m.local_key, m.ins) for m in result.learned] == [(f"{SRC}/Patient/p1", INS)]
    known = process_ingest(MIXED, SRC, MSG, None, {f"{SRC}/Patient/p1": INS})
    assert known.learned == ()


def test_a_changed_ins_is_learned_again() -> None:
    result = process_ingest(MIXED, SRC, MSG, None, {f"{SRC}/Patient/p1": "999999999999999"})
    assert [m.ins for m in result.learned] == [INS]


def test_single_resource_is_forwarded_byte_for_byte() -> None:
    body = b'{ "resourceType" : "Patient", "id": "p1",\n "birthDate": "1950-04-02" }'
    result = process_ingest(body, SRC, MSG, "R4", {})
    (record,) = result.records
    assert record.value is body
    assert (record.key, record.release, record.index) == (f"{SRC}/Patient/p1", "R4", 0)
    assert record.message_id == child_message_id(MSG, 0)


def test_invalid_entry_rejects_the_whole_bundle() -> None:
    body = bundle(
        entry(patient("p1", INS_ID), PATIENT_URL),
        entry({"resourceType": "Observation", "status": "final"}),
    )
    result = process_ingest(body, SRC, MSG, None, {})
    assert result.records == ()
    assert result.learned == ()
    assert result.rejection is not None
    assert result.rejection.code == "validation-failed"
    assert "entry[1].resource.code (missing)" in result.rejection.detail


def test_entry_of_unknown_type_rejects_the_bundle() -> None:
    body = bundle(entry({"resourceType": "NotAType"}))
    result = process_ingest(body, SRC, MSG, None, {})
    assert result.rejection is not None
    assert "entry[0].resource.resourceType (unknown-resource-type)" in result.rejection.detail


def test_r5_bundle_records_carry_r5() -> None:
    r5_encounter = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": [{"coding": [{"code": "IMP"}]}],
        "subject": {"reference": "Patient/p1"},
    }
    result = process_ingest(bundle(entry(r5_encounter), kind="collection"), SRC, MSG, None, {})
    assert [r.release for r in result.records] == ["R5"]


def test_document_bundle_is_one_record_keyed_by_its_patient() -> None:
    composition = {
        "resourceType": "Composition",
        "status": "final",
        "type": {"text": "summary"},
        "subject": {"reference": PATIENT_URL},
        "date": "2024-03-18",
        "author": [{"display": "Synth author"}],
        "title": "Synthetic summary",
    }
    body = orjson.dumps(
        {
            "resourceType": "Bundle",
            "type": "document",
            "identifier": {"system": "urn:x", "value": "d1"},
            "timestamp": "2024-03-18T10:00:00+01:00",
            "entry": [
                entry(composition, "urn:uuid:6f0e1b2a-0000-4000-8000-000000000009"),
                entry(patient("p1", INS_ID), PATIENT_URL),
            ],
        }
    )
    result = process_ingest(body, SRC, MSG, "R4", {})
    assert result.rejection is None
    (record,) = result.records
    assert (record.resource_type, record.key, record.value) == ("Bundle", INS, body)


@pytest.mark.parametrize("kind", ["searchset", "history", "transaction-response"])
def test_other_bundle_types_are_rejected(kind: str) -> None:
    body = bundle(entry(patient("p1")), kind=kind)
    result = process_ingest(body, SRC, MSG, None, {})
    assert result.rejection is not None
    assert result.rejection.code == "unsupported-bundle-type"


def test_transaction_without_entries_is_accepted_with_no_records() -> None:
    body = orjson.dumps({"resourceType": "Bundle", "type": "transaction"})
    result = process_ingest(body, SRC, MSG, None, {})
    assert result.accepted
    assert result.records == ()


def test_an_empty_entry_array_is_refused_as_fhir_json_says() -> None:
    result = process_ingest(bundle(), SRC, MSG, None, {})
    assert result.rejection is not None
    assert result.rejection.code == "empty-element"


SECRETS = ("SYNTHSECRETNAME", "998877665544332", "LOCALSECRET42")


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps({"resourceType": "Patient", "birthDate": SECRETS[0]}),
        orjson.dumps({"resourceType": "Patient", "gender": 5, "name": [{"family": 7}]}),
        orjson.dumps({"resourceType": "Patient", "name": SECRETS[0]}),
        orjson.dumps({"resourceType": "Patient", SECRETS[0]: SECRETS[1]}),
        orjson.dumps({"resourceType": "Patient", "name": [{SECRETS[2]: "x"}]}),
        orjson.dumps({"resourceType": "Patient", "id": f"{SECRETS[2]} with space"}),
        orjson.dumps({"resourceType": SECRETS[0], "id": SECRETS[2]}),
        orjson.dumps({"resourceType": "Patient", "identifier": {"value": SECRETS[1]}}),
        orjson.dumps({"resourceType": "Patient", "contained": [{"resourceType": SECRETS[0]}]}),
        orjson.dumps({"resourceType": "Patient", "contained": [{"resourceType": 5}]}),
        orjson.dumps({"resourceType": "Observation", "status": SECRETS[1], "code": SECRETS[0]}),
        bundle(entry(patient(SECRETS[2])), entry({"resourceType": "Patient", "id": [SECRETS[1]]})),
        bundle(entry({"resourceType": SECRETS[0]})),
        f'{{"resourceType": "Patient", "name": "{SECRETS[0]}"'.encode(),
        f'{{"resourceType": "Patient", "name": "{SECRETS[0]}\xff"}}'.encode("latin-1"),
    ],
)
def test_rejection_details_never_carry_input_values(body: bytes) -> None:
    result = process_ingest(body, SRC, MSG, None, {})
    assert result.rejection is not None
    for secret in SECRETS:
        assert secret not in result.rejection.detail
        assert secret not in result.rejection.code
