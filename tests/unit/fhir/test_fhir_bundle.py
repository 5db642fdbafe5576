"""Bundle resolution: entry ids, in-Bundle references rewritten to Type/id, refusals."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from caremesh.envelope import child_message_id
from caremesh.errors import InvalidFhirError
from caremesh.fhir.bundle import entry_id, resolve_bundle
from caremesh.fhir.ingest import process_ingest

SRC = "synth-hosp"
MSG = "3f2b5c1e-7a44-5d0e-9c1b-0a1b2c3d4e5f"
U_PATIENT = "6f0e1b2a-0000-4000-8000-00000000000a"
U_ENC = "6f0e1b2a-0000-4000-8000-00000000000b"
U_OBS = "6f0e1b2a-0000-4000-8000-00000000000c"
DERIVED = [f"derived-{n}" for n in range(10)]


@pytest.mark.parametrize(
    ("resource", "full_url", "expected"),
    [
        ({"resourceType": "Patient", "id": "p1"}, f"urn:uuid:{U_PATIENT}", "p1"),
        ({"resourceType": "Patient"}, f"urn:uuid:{U_PATIENT}", U_PATIENT),
        ({"resourceType": "Patient"}, f"urn:uuid:{U_PATIENT.upper()}", U_PATIENT),
        ({"resourceType": "Patient"}, "urn:uuid:not-a-uuid", "derived-0"),
        ({"resourceType": "Patient"}, "urn:oid:1.2.3.4", "derived-0"),
        ({"resourceType": "Patient"}, "https://ehr.example/fhir/Patient/9", "derived-0"),
        ({"resourceType": "Patient"}, None, "derived-0"),
    ],
    ids=["own id", "uuid", "uuid upper", "bad uuid", "oid", "restful", "none"],
)
def test_entry_id_rule(resource: dict[str, Any], full_url: str | None, expected: str) -> None:
    assert entry_id(resource, full_url, "derived-0") == expected


def _resolved(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    resolved = resolve_bundle(copy.deepcopy(entries), DERIVED)
    return [orjson.loads(value) if value is not None else {} for value in resolved]


def _obs(subject: str, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "subject": {"reference": subject}, **more}


PATIENT_ENTRY = {"fullUrl": f"urn:uuid:{U_PATIENT}", "resource": {"resourceType": "Patient"}}


@pytest.mark.parametrize(
    ("entries", "path", "expected"),
    [
        (
            [PATIENT_ENTRY, {"resource": _obs(f"urn:uuid:{U_PATIENT}")}],
            ("subject", "reference"),
            f"Patient/{U_PATIENT}",
        ),
        (
            [
                {"fullUrl": "urn:oid:1.2.3.4.5", "resource": {"resourceType": "Patient"}},
                {"resource": _obs("urn:oid:1.2.3.4.5")},
            ],
            ("subject", "reference"),
            "Patient/derived-0",
        ),
        (
            [
                {
                    "fullUrl": "https://ehr.example/fhir/Patient/p7",
                    "resource": {"resourceType": "Patient", "id": "p7"},
                },
                {"resource": _obs("https://ehr.example/fhir/Patient/p7")},
            ],
            ("subject", "reference"),
            "Patient/p7",
        ),
        (
            [
                {
                    "fullUrl": "https://ehr.example/fhir/Patient/p7",
                    "resource": {"resourceType": "Patient", "id": "local-7"},
                },
                {
                    "fullUrl": "https://ehr.example/fhir/Observation/o1",
                    "resource": _obs("Patient/p7"),
                },
            ],
            ("subject", "reference"),
            "Patient/local-7",
        ),
        (
            [
                {
                    "resource": {
                        "resourceType": "Patient",
                        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1"}],
                    }
                },
                {"resource": _obs("Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|1")},
            ],
            ("subject", "reference"),
            "Patient/derived-0",
        ),
        (
            [{"resource": _obs("Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|1")}],
            ("subject", "reference"),
            "Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|1",
        ),
        (
            [PATIENT_ENTRY, {"resource": _obs("https://elsewhere.example/fhir/Patient/3")}],
            ("subject", "reference"),
            "https://elsewhere.example/fhir/Patient/3",
        ),
        (
            [PATIENT_ENTRY, {"resource": _obs("Patient/kept")}],
            ("subject", "reference"),
            "Patient/kept",
        ),
        (
            [
                PATIENT_ENTRY,
                {
                    "resource": _obs(
                        "#c1",
                        contained=[
                            {
                                "resourceType": "Specimen",
                                "id": "c1",
                                "subject": {"reference": f"urn:uuid:{U_PATIENT}"},
                            }
                        ],
                    )
                },
            ],
            ("contained", 0, "subject", "reference"),
            f"Patient/{U_PATIENT}",
        ),
        (
            [
                PATIENT_ENTRY,
                {
                    "resource": {
                        "resourceType": "CareTeam",
                        "participant": [
                            {"member": {"reference": "Practitioner/x"}},
                            {"member": {"reference": f"urn:uuid:{U_PATIENT}"}},
                        ],
                    }
                },
            ],
            ("participant", 1, "member", "reference"),
            f"Patient/{U_PATIENT}",
        ),
    ],
    ids=[
        "urn:uuid",
        "urn:oid",
        "absolute fullUrl",
        "relative against the entry's base",
        "conditional matching one entry",
        "conditional matching none stays",
        "other server stays",
        "relative to no entry stays",
        "inside a contained resource",
        "nested in a backbone array",
    ],
)
def test_references_are_rewritten(
    entries: list[dict[str, Any]], path: tuple[str | int, ...], expected: str
) -> None:
    node: Any = _resolved(entries)[-1]
    for step in path:
        node = node[step]
    assert node == expected


def test_every_entry_gets_an_id_and_deletes_are_left_alone() -> None:
    delete = {"request": {"method": "DELETE", "url": "Observation/old"}}
    entries = [PATIENT_ENTRY, delete, {"resource": _obs(f"urn:uuid:{U_PATIENT}")}]
    out = copy.deepcopy(entries)
    resolved = resolve_bundle(out, DERIVED)
    assert out[0]["resource"]["id"] == U_PATIENT
    assert out[1] == delete
    assert resolved[1] is None
    assert out[2]["resource"]["id"] == "derived-2"
    assert orjson.loads(resolved[2] or b"")["id"] == "derived-2"


@pytest.mark.parametrize(
    ("entries", "code", "where"),
    [
        (
            [{"resource": _obs(f"urn:uuid:{U_PATIENT}")}],
            "unresolved-reference",
            "Bundle.entry[0].resource.subject.reference",
        ),
        (
            [{"resource": _obs("urn:oid:1.2.3")}],
            "unresolved-reference",
            "Bundle.entry[0].resource.subject.reference",
        ),
        (
            [PATIENT_ENTRY, PATIENT_ENTRY],
            "duplicate-full-url",
            "Bundle.entry[1].fullUrl",
        ),
    ],
    ids=["dangling uuid", "dangling oid", "duplicate fullUrl"],
)
def test_unresolvable_bundles_are_refused_naming_the_element(
    entries: list[dict[str, Any]], code: str, where: str
) -> None:
    with pytest.raises(InvalidFhirError) as caught:
        resolve_bundle(copy.deepcopy(entries), DERIVED)
    assert caught.value.code == code
    assert [issue.expression for issue in caught.value.issues] == [where]
    assert U_PATIENT not in caught.value.detail
    assert "1.2.3" not in caught.value.detail


def synthea_bundle() -> bytes:
    """A Synthea-style transaction: urn:uuid fullUrls, no ids, entries referencing each other."""
    return orjson.dumps(
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": f"urn:uuid:{U_PATIENT}",
                    "resource": {"resourceType": "Patient", "gender": "female"},
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "fullUrl": f"urn:uuid:{U_ENC}",
                    "resource": {
                        "resourceType": "Encounter",
                        "status": "finished",
                        "class": {"code": "AMB"},
                        "subject": {"reference": f"urn:uuid:{U_PATIENT}"},
                    },
                    "request": {"method": "POST", "url": "Encounter"},
                },
                {
                    "fullUrl": f"urn:uuid:{U_OBS}",
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": "weight"},
                        "subject": {"reference": f"urn:uuid:{U_PATIENT}"},
                        "encounter": {"reference": f"urn:uuid:{U_ENC}"},
                    },
                    "request": {"method": "POST", "url": "Observation"},
                },
                {
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": "bmi"},
                        "subject": {"reference": f"urn:uuid:{U_PATIENT}"},
                        "derivedFrom": [{"reference": f"urn:uuid:{U_OBS}"}],
                    },
                    "request": {"method": "POST", "url": "Observation"},
                },
            ],
        }
    )


def test_a_synthea_style_transaction_becomes_records_whose_references_resolve() -> None:
    result = process_ingest(synthea_bundle(), SRC, MSG, "R4", {})
    assert result.rejection is None
    resources = [orjson.loads(record.value) for record in result.records]
    ids = {f"{r['resourceType']}/{r['id']}" for r in resources}
    assert ids == {
        f"Patient/{U_PATIENT}",
        f"Encounter/{U_ENC}",
        f"Observation/{U_OBS}",
        f"Observation/{child_message_id(MSG, 3)}",
    }
    references = [
        resources[1]["subject"],
        resources[2]["subject"],
        resources[2]["encounter"],
        resources[3]["subject"],
        *resources[3]["derivedFrom"],
    ]
    assert all(ref["reference"] in ids for ref in references)
    assert len({record.key for record in result.records}) == 1
    assert process_ingest(synthea_bundle(), SRC, MSG, "R4", {}) == result


def test_escaped_references_are_read_and_written_as_json() -> None:
    entries = [
        {"fullUrl": "urn:uuid:a/b", "resource": {"resourceType": "Patient", "id": "p1"}},
        {"resource": _obs("urn:uuid:a/b", note=[{"text": 'say "reference":"urn:uuid:x"'}])},
    ]
    raw = orjson.dumps(entries).replace(b"urn:uuid:a/b", b"urn:uuid:a\\/b")
    resolved = _resolved(orjson.loads(raw))
    assert resolved[1]["subject"] == {"reference": "Patient/p1"}
    assert resolved[1]["note"][0]["text"] == 'say "reference":"urn:uuid:x"'


def test_a_bundle_inside_an_entry_keeps_its_own_references() -> None:
    inner = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:{U_OBS}", "resource": {"resourceType": "Patient"}},
            {"resource": _obs(f"urn:uuid:{U_OBS}")},
        ],
    }
    resolved = _resolved([{"fullUrl": f"urn:uuid:{U_ENC}", "resource": inner}])
    assert resolved[0]["id"] == U_ENC
    assert resolved[0]["entry"][1]["resource"]["subject"]["reference"] == f"urn:uuid:{U_OBS}"
