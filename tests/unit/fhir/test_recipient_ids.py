"""Identity at recipients: ids unique and stable per (source, type, id), references rewritten,
one Patient per INS, and the golden Patient that a thinner description never erases."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from caremesh.fhir.golden_patient import merge_patient
from caremesh.fhir.patient_key import INS_SYSTEM
from caremesh.fhir.recipient_ids import (
    ORGANISATION_SYSTEM,
    RecipientContext,
    for_recipient_holding,
    for_recipients,
    patient_recipient_id,
    recipient_id,
    source_system,
)

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
INS = "2990175123456"
ids = st.text(alphabet="abcXYZ019-.", min_size=1, max_size=64)
sources = st.sampled_from(["hosp-a", "hosp-b", "clinic.r5", "lab_1"])
types = st.sampled_from(["Patient", "Observation", "Encounter", "Condition", "CareTeam"])


@given(st.tuples(sources, types, ids), st.tuples(sources, types, ids))
def test_two_triples_never_share_an_id_and_each_is_stable(
    a: tuple[str, str, str], b: tuple[str, str, str]
) -> None:
    first = recipient_id(*a)
    assert FHIR_ID.fullmatch(first)
    assert recipient_id(*a) == first
    assert (recipient_id(*b) == first) == (a == b)


@given(st.text(alphabet="0123456789", min_size=13, max_size=15))
def test_patient_ids_hash_the_ins_and_never_show_it(ins: str) -> None:
    rid = patient_recipient_id(ins)
    assert FHIR_ID.fullmatch(rid)
    assert ins not in rid
    assert rid == patient_recipient_id(ins)
    assert rid not in {recipient_id(s, "Patient", ins) for s in ("hosp-a", "hosp-b")}


def _obs(subject: dict[str, object]) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": "1",
        "meta": {"versionId": "3"},
        "status": "final",
        "code": {"text": "weight"},
        "subject": subject,
        "encounter": {"reference": "Encounter/1/_history/2"},
        "performer": [
            {"reference": "Organization/org-a", "display": "kept"},
            {"reference": "Practitioner/9"},
        ],
        "hasMember": [{"reference": "#contained-1"}],
        "derivedFrom": [{"reference": "urn:uuid:7f7c0c4e-7b1b-4f7e-9d9c-0a1b2c3d4e5f"}],
    }


def test_every_reference_is_rewritten_and_the_source_id_is_kept() -> None:
    ctx = RecipientContext(
        source="hosp-a",
        patient_key="hosp-a/Patient/1",
        fallback_id="m-1",
        organisations={"org-a": "Hospital A", "org-b": ""},
    )
    out = for_recipients(_obs({"reference": "Patient/1"}), ctx)
    assert out["id"] == recipient_id("hosp-a", "Observation", "1")
    assert out["identifier"] == [{"system": "urn:caremesh:source:hosp-a", "value": "1"}]
    assert out["meta"] == {"source": source_system("hosp-a")}
    assert out["subject"] == {
        "reference": f"Patient/{recipient_id('hosp-a', 'Patient', '1')}",
        "identifier": {"system": "urn:caremesh:source:hosp-a", "value": "1"},
        "type": "Patient",
    }
    assert out["encounter"]["reference"] == f"Encounter/{recipient_id('hosp-a', 'Encounter', '1')}"
    assert out["encounter"]["identifier"]["value"] == "1"
    assert out["performer"][0] == {
        "type": "Organization",
        "identifier": {"system": ORGANISATION_SYSTEM, "value": "org-a"},
        "display": "kept",
    }
    assert out["performer"][1]["reference"] == (
        f"Practitioner/{recipient_id('hosp-a', 'Practitioner', '9')}"
    )
    assert out["hasMember"] == [{"reference": "#contained-1"}]
    assert out["derivedFrom"][0]["reference"].startswith("urn:uuid:")


def test_a_reference_to_a_type_the_recipient_never_receives_is_logical() -> None:
    ctx = RecipientContext("hosp-a", "hosp-a/Patient/1", "m", organisations={"org-a": "A"})
    out = for_recipient_holding(
        for_recipients(_obs({"reference": "Patient/1"}), ctx), frozenset({"Observation"})
    )
    assert out["performer"][1] == {
        "identifier": {"system": "urn:caremesh:source:hosp-a", "value": "9"},
        "type": "Practitioner",
    }
    assert out["subject"]["reference"].startswith("Patient/")  # a Patient is always sent first


def test_two_sources_patient_1_never_meet() -> None:
    a = for_recipients(
        _obs({"reference": "Patient/1"}), RecipientContext("hosp-a", "hosp-a/Patient/1", "m")
    )
    b = for_recipients(
        _obs({"reference": "Patient/1"}), RecipientContext("hosp-b", "hosp-b/Patient/1", "m")
    )
    assert a["id"] != b["id"]
    assert a["subject"] != b["subject"]


def test_a_patient_with_an_ins_is_one_patient_whatever_its_source() -> None:
    patient = {
        "resourceType": "Patient",
        "id": "7001",
        "identifier": [{"system": INS_SYSTEM, "value": INS}],
    }
    fhir = for_recipients({**patient, "id": "1"}, RecipientContext("hosp-a", INS, "m"))
    hl7 = for_recipients(patient, RecipientContext("hosp-b-v2", INS, "m"))
    assert fhir["id"] == hl7["id"] == patient_recipient_id(INS)
    assert {"system": "urn:caremesh:source:hosp-b-v2", "value": "7001"} in hl7["identifier"]


def test_a_reference_the_validate_stage_resolved_to_an_ins_carries_it() -> None:
    # keyed by the INS: the validate stage learned hosp-a/Patient/1 -> INS from an earlier Patient
    out = for_recipients(_obs({"reference": "Patient/1"}), RecipientContext("hosp-a", INS, "m"))
    assert out["subject"] == {
        "reference": f"Patient/{patient_recipient_id(INS)}",
        "identifier": {"system": INS_SYSTEM, "value": INS},
        "type": "Patient",
    }
    logical = for_recipients(
        _obs({"type": "Patient", "identifier": {"system": INS_SYSTEM, "value": INS}}),
        RecipientContext("hosp-a", INS, "m"),
    )
    assert logical["subject"]["reference"] == f"Patient/{patient_recipient_id(INS)}"
    conditional = for_recipients(
        _obs({"reference": f"Patient?identifier={INS_SYSTEM}|{INS}"}),
        RecipientContext("hosp-a", INS, "m"),
    )
    assert conditional["subject"]["reference"] == f"Patient/{patient_recipient_id(INS)}"


def test_a_resource_without_id_gets_one_from_its_record() -> None:
    resource = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    out = for_recipients(resource, RecipientContext("hosp-a", "hosp-a/Observation", "m-1"))
    assert out["id"] == recipient_id("hosp-a", "Observation", "m-1")
    assert "identifier" not in out


def test_a_thinner_description_never_erases_a_fuller_one() -> None:
    adt = {
        "resourceType": "Patient",
        "id": "p",
        "identifier": [{"system": INS_SYSTEM, "value": INS}, {"system": "urn:x", "value": "7"}],
        "name": [
            {"use": "official", "family": "Martin", "given": ["Anne"]},
            {"use": "maiden", "family": "Durand"},
        ],
        "address": [{"use": "home", "city": "Lyon"}],
        "deceasedBoolean": False,
        "text": {"status": "generated", "div": "<div>ADT</div>"},
    }
    oru = {
        "resourceType": "Patient",
        "id": "p",
        "identifier": [{"system": INS_SYSTEM, "value": INS}],
        "name": [{"use": "official", "family": "Martin", "given": ["Anne", "Marie"]}],
        "gender": "female",
        "deceasedDateTime": "2026-01-01",
    }
    golden = merge_patient(merge_patient(None, adt), oru)
    assert golden["name"] == [
        {"use": "official", "family": "Martin", "given": ["Anne", "Marie"]},
        {"use": "maiden", "family": "Durand"},
    ]
    assert golden["address"] == adt["address"]
    assert golden["identifier"] == adt["identifier"]
    assert golden["gender"] == "female"
    assert golden["deceasedDateTime"] == "2026-01-01"
    assert "deceasedBoolean" not in golden
    assert "text" not in golden


@given(st.lists(st.dictionaries(st.sampled_from(["gender", "birthDate", "active"]), ids)))
def test_the_merge_keeps_every_element_once_seen(descriptions: list[dict[str, str]]) -> None:
    golden = None
    seen: set[str] = set()
    for description in descriptions:
        golden = merge_patient(golden, {"resourceType": "Patient", **description})
        seen |= set(description)
        assert seen <= set(golden)
        for name, value in description.items():
            assert golden[name] == value
