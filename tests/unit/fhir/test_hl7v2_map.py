"""HL7 v2 → FHIR: ADT^A01/A03/A08 and ORU^R01 samples to the expected R4 resources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle

from caremesh.errors import InvalidHl7Error
from caremesh.fhir.hl7v2_map import CONTROL_ID_SYSTEM, hl7v2_to_fhir, map_hl7v2
from caremesh.fhir.ingest import process_ingest
from caremesh.fhir.patient_key import INS_SYSTEM

DATA = Path(__file__).parents[2] / "data" / "hl7"
INS = "100000000000017"
SUBJECT = {"reference": "Patient/LOCAL7788", "identifier": {"system": INS_SYSTEM, "value": INS}}


def sample(name: str) -> bytes:
    return (DATA / f"{name}.hl7").read_bytes()


def resources(name: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in map_hl7v2(sample(name))["entry"]:
        out.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return out


@pytest.mark.parametrize(
    ("name", "control_id"),
    [
        ("adt_a01", "SYNA01-0001"),
        ("adt_a03", "SYNA03-0002"),
        ("adt_a08", "SYNA08-0003"),
        ("oru_r01", "SYNR01-0004"),
    ],
)
def test_output_is_a_valid_r4b_collection_identified_by_msh10(name: str, control_id: str) -> None:
    body = hl7v2_to_fhir(sample(name))
    Bundle.model_validate_json(body)
    bundle = orjson.loads(body)
    assert bundle["type"] == "collection"
    assert bundle["identifier"] == {"system": CONTROL_ID_SYSTEM, "value": control_id}
    assert hl7v2_to_fhir(sample(name)) == body
    full_urls = [entry["fullUrl"] for entry in bundle["entry"]]
    assert len(set(full_urls)) == len(full_urls)


def test_a01_patient() -> None:
    (patient,) = resources("adt_a01")["Patient"]
    assert patient == {
        "resourceType": "Patient",
        "id": "LOCAL7788",
        "identifier": [
            {
                "value": "LOCAL7788",
                "system": "urn:oid:1.2.250.1.999.1.1",
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PI"}
                    ]
                },
            },
            {"use": "official", "system": INS_SYSTEM, "value": INS},
        ],
        "name": [
            {"use": "official", "family": "SYNTHNOM", "given": ["Camille", "Aline"]},
            {"use": "usual", "family": "SYNTHUSAGE", "given": ["Camille"]},
        ],
        "gender": "female",
        "birthDate": "1950-04-02",
        "address": [
            {
                "use": "home",
                "line": ["12 rue de l Exemple", "Bat B"],
                "city": "Villesynth",
                "postalCode": "69999",
                "country": "FRA",
            }
        ],
    }


def test_a01_encounter() -> None:
    (encounter,) = resources("adt_a01")["Encounter"]
    assert encounter == {
        "resourceType": "Encounter",
        "id": "VISIT4455",
        "status": "in-progress",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "IMP",
            "display": "inpatient encounter",
        },
        "subject": SUBJECT,
        "identifier": [{"value": "VISIT4455", "system": "urn:oid:1.2.250.1.999.1.2"}],
        "period": {"start": "2024-03-15T10:00:00+01:00"},
    }


def test_a03_encounter_is_finished_with_discharge() -> None:
    found = resources("adt_a03")
    (encounter,) = found["Encounter"]
    assert encounter["status"] == "finished"
    assert encounter["class"]["code"] == "EMER"
    assert encounter["period"] == {
        "start": "2024-03-19T22:00:00+01:00",
        "end": "2024-03-20T15:30:00+01:00",
    }
    assert encounter["hospitalization"] == {
        "dischargeDisposition": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0112", "code": "01"}]
        }
    }
    (patient,) = found["Patient"]
    assert [i["value"] for i in patient["identifier"]] == ["LOCAL7788"]
    assert encounter["subject"] == {"reference": "Patient/LOCAL7788"}


def test_a08_update_reads_local_times_in_the_default_zone() -> None:
    found = resources("adt_a08")
    (encounter,) = found["Encounter"]
    assert encounter["status"] == "in-progress"
    assert encounter["class"]["code"] == "AMB"
    assert encounter["period"] == {"start": "2024-03-16T08:30:00+01:00"}
    assert found["Patient"][0]["address"][0]["city"] == "Bourgsynth"


def test_oru_observations() -> None:
    observations = resources("oru_r01")["Observation"]
    assert [o["status"] for o in observations] == ["final", "final", "preliminary", "corrected"]
    assert [o["code"]["coding"][0]["code"] for o in observations] == [
        "29463-7",
        "4548-4",
        "8251-1",
        "LA6576-8",
    ]
    assert all(o["code"]["coding"][0]["system"] == "http://loinc.org" for o in observations)
    assert all(o["subject"] == SUBJECT for o in observations)
    weight, hba1c, comment, coded = observations
    assert weight["valueQuantity"] == {
        "value": 82.5,
        "unit": "kilogram",
        "system": "http://unitsofmeasure.org",
        "code": "kg",
    }
    assert weight["effectiveDateTime"] == "2024-03-18T07:10:00+01:00"
    assert hba1c["valueQuantity"]["comparator"] == ">"
    assert hba1c["valueQuantity"]["value"] == 9.5
    assert hba1c["valueQuantity"]["code"] == "%"
    assert hba1c["effectiveDateTime"] == "2024-03-18T07:00:00+01:00"
    assert hba1c["interpretation"][0]["coding"][0]["code"] == "H"
    assert comment["valueString"] == "sample slightly haemolysed"
    assert coded["valueCodeableConcept"]["coding"] == [
        {"system": "http://snomed.info/sct", "code": "260373001", "display": "Detected"}
    ]
    assert len({o["id"] for o in observations}) == 4


MSH = "MSH|^~\\&|L|S|C|T|20240318081500+0100||ORU^R01|CTRL-{n}|P|2.5\r"
PID = "PID|1||P1^^^H^PI\r"
OBR = "OBR|1||FILL-1|x^x^LN|||20240318070000+0100\r"


UCUM = "http://unitsofmeasure.org"
CODE = "OBX|1|{kind}|1-1^a^LN||{value}|{unit}|||||{status}"


def obx(kind: str, value: str, unit: str = "", status: str = "F") -> str:
    return CODE.format(kind=kind, value=value, unit=unit, status=status)


@pytest.mark.parametrize(
    ("segment", "value"),
    [
        (
            obx("NM", "12", "mmol/L^^UCUM"),
            {"valueQuantity": {"value": 12, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"}},
        ),
        (obx("NM", "12", "beats^^L"), {"valueQuantity": {"value": 12, "unit": "beats"}}),
        # no coding system and not a UCUM unit: kept as text, not claimed to be UCUM
        (obx("NM", "4", "mEq/L"), {"valueQuantity": {"value": 4, "unit": "mEq/L"}}),
        (
            obx("NM", "4", "meq/L"),
            {"valueQuantity": {"value": 4, "unit": "meq/L", "system": UCUM, "code": "meq/L"}},
        ),
        (obx("NM", "<=0.5"), {"valueQuantity": {"value": 0.5, "comparator": "<="}}),
        (obx("NM", "not a number"), {"valueString": "not a number"}),
        (
            obx("SN", ">^10", "g/L"),
            {
                "valueQuantity": {
                    "value": 10,
                    "comparator": ">",
                    "unit": "g/L",
                    "system": UCUM,
                    "code": "g/L",
                }
            },
        ),
        (obx("TX", "line one~line two"), {"valueString": "line one\nline two"}),
        (obx("FT", "a\\.br\\b"), {"valueString": "a\nb"}),
        (obx("DT", "20240301"), {"valueDateTime": "2024-03-01"}),
        (
            obx("CE", "Y^Yes^HL70136"),
            {"valueCodeableConcept": {"coding": [{"code": "Y", "display": "Yes"}], "text": "Yes"}},
        ),
        (obx("NM", "", status="X"), {}),
        (obx("NM", "1234567890123456789"), {"valueString": "1234567890123456789"}),
    ],
)
def test_obx_value_types(segment: str, value: dict[str, Any]) -> None:
    raw = (MSH.format(n=1) + PID + OBR + segment + "\r").encode()
    (observation,) = resources_of(raw)["Observation"]
    found = {k: v for k, v in observation.items() if k.startswith("value")}
    assert found == value
    Bundle.model_validate_json(hl7v2_to_fhir(raw))


def resources_of(raw: bytes) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in map_hl7v2(raw)["entry"]:
        out.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return out


def test_observation_ids_survive_a_resend_under_a_new_control_id() -> None:
    obx = "OBX|1|NM|1-1^a^LN||12||||||F\r"
    first = resources_of((MSH.format(n=1) + PID + OBR + obx).encode())["Observation"][0]
    again = resources_of((MSH.format(n=2) + PID + OBR + obx).encode())["Observation"][0]
    assert first["id"] == again["id"]


def test_unknown_patient_class_maps_to_null_flavor() -> None:
    raw = (MSH.format(n=1).replace("ORU^R01", "ADT^A04") + PID + "PV1|1|Z\r").encode()
    (encounter,) = resources_of(raw)["Encounter"]
    assert encounter["class"]["code"] == "UNK"
    assert encounter["status"] == "in-progress"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (MSH.format(n=1) + "PV1|1|I\r", "missing-segment"),
        (MSH.format(n=1) + PID + OBR + "OBX|1|NM|||12||||||F\r", "missing-field"),
        (MSH.format(n=1).replace("ORU^R01", "ADT^A40") + PID, "unsupported-message-type"),
        ("EVN|A01\r" + PID, "no-msh"),
    ],
)
def test_mapping_rejections(raw: str, code: str) -> None:
    with pytest.raises(InvalidHl7Error) as caught:
        map_hl7v2(raw.encode())
    assert caught.value.code == code


def test_a01_then_a03_keys_the_discharge_by_the_learned_ins() -> None:
    admit = process_ingest(hl7v2_to_fhir(sample("adt_a01")), "synth-hosp", "m-1", "R4", {})
    learned = {m.local_key: m.ins for m in admit.learned}
    assert learned == {"synth-hosp/Patient/LOCAL7788": INS}
    discharge = process_ingest(hl7v2_to_fhir(sample("adt_a03")), "synth-hosp", "m-2", "R4", learned)
    assert [(r.resource_type, r.key, r.key_kind) for r in discharge.records] == [
        ("Patient", INS, "learned"),
        ("Encounter", INS, "learned"),
    ]
