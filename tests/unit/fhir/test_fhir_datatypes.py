"""Datatype rules a strict server (HAPI FHIR) enforces: UCUM units, codes of complete HL7 code
systems, strict base64 and Attachment hashes, absolute canonical URLs."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caremesh.fhir.datatypes import CODE_SYSTEMS, datatype_issues, is_ucum_unit
from caremesh.fhir.ingest import process_ingest

UCUM = "http://unitsofmeasure.org"
DRUG_FORM = "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm"
SUBJECT = {"reference": "Patient/p1"}
HELLO = base64.b64encode(b"synthetic report").decode()
HELLO_SHA1 = base64.b64encode(hashlib.sha1(b"synthetic report").digest()).decode()


def quantity(code: str, system: str = UCUM) -> dict[str, Any]:
    return {"value": 5, "unit": "unit text", "system": system, "code": code}


def observation(value: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": SUBJECT,
        "valueQuantity": value,
    }


def medication_request(
    dose: dict[str, Any], *, dispense: dict[str, Any] | None = None, form: str = "TAB"
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "subject": SUBJECT,
        "contained": [
            {
                "resourceType": "Medication",
                "id": "med1",
                "form": {"coding": [{"system": DRUG_FORM, "code": form}]},
                "ingredient": [
                    {
                        "itemCodeableConcept": {"text": "synthetic"},
                        "strength": {"numerator": dose, "denominator": quantity("TAB", DRUG_FORM)},
                    }
                ],
            }
        ],
        "medicationReference": {"reference": "#med1"},
        "dosageInstruction": [{"doseAndRate": [{"doseQuantity": dose}]}],
        "dispenseRequest": {
            "quantity": dispense or quantity("TAB", DRUG_FORM),
            "expectedSupplyDuration": {"value": 30, "system": UCUM, "code": "d"},
        },
    }


def report(attachment: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"text": "synthetic"},
        "subject": SUBJECT,
        "presentedForm": [{"contentType": "text/plain", **attachment}],
    }


def procedure(canonical: str) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "status": "completed",
        "subject": SUBJECT,
        "instantiatesCanonical": ["http://example.org/fhir/PlanDefinition/ok", canonical],
    }


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{i}", "resource": r}
            for i, r in enumerate(resources)
        ],
    }


CASES: list[tuple[str, dict[str, Any], str | None, str | None]] = [
    # (id, resource, (code, element) of the first issue or None when valid, value to hide)
    ("ucum mg", observation(quantity("mg")), None, None),
    ("ucum mL/h", observation(quantity("mL/h")), None, None),
    ("ucum 10*3/uL", observation(quantity("10*3/uL")), None, None),
    ("ucum {tbl}", observation(quantity("{tbl}")), None, None),
    ("ucum mm[Hg]", observation(quantity("mm[Hg]")), None, None),
    ("ucum %", observation(quantity("%")), None, None),
    (
        "ucum mEq",
        observation(quantity("mEq")),
        "invalid-unit Observation.valueQuantity.code",
        "mEq",
    ),
    (
        "ucum drop",
        observation(quantity("drop")),
        "invalid-unit Observation.valueQuantity.code",
        "drop",
    ),
    (
        "ucum ml/hr",
        observation(quantity("ml/hr")),
        "invalid-unit Observation.valueQuantity.code",
        "ml/hr",
    ),
    (
        "ucum unclosed annotation",
        observation(quantity("{tbl")),
        "invalid-unit Observation.valueQuantity.code",
        "{tbl",
    ),
    (
        "a unit that is not UCUM is free text",
        observation(quantity("mEq", "http://example.org/units")),
        None,
        None,
    ),
    ("medication valid", medication_request(quantity("mg")), None, None),
    (
        "medication dose mcg",
        medication_request(quantity("mcg")),
        "invalid-unit MedicationRequest.contained[0].ingredient[0].strength.numerator.code",
        "mcg",
    ),
    (
        "drug form Tab in a Quantity",
        medication_request(quantity("mg"), dispense=quantity("Tab", DRUG_FORM)),
        "unknown-code MedicationRequest.dispenseRequest.quantity.code",
        "Tab",
    ),
    (
        "drug form tab in a Coding",
        medication_request(quantity("mg"), form="tab"),
        "unknown-code MedicationRequest.contained[0].form.coding[0].code",
        "tab",
    ),
    (
        "Age in a Condition",
        {
            "resourceType": "Condition",
            "subject": SUBJECT,
            "onsetAge": {"value": 3, "system": UCUM, "code": "yrs"},
        },
        "invalid-unit Condition.onsetAge.code",
        "yrs",
    ),
    (
        "an entry of a Bundle",
        bundle(observation(quantity("mg")), observation(quantity("ea"))),
        "invalid-unit Bundle.entry[1].resource.valueQuantity.code",
        '"ea"',
    ),
    ("attachment data and hash", report({"data": HELLO, "hash": HELLO_SHA1}), None, None),
    ("attachment data alone", report({"data": HELLO}), None, None),
    (
        "attachment data with a space",
        report({"data": HELLO[:4] + " " + HELLO[4:]}),
        "invalid-base64 DiagnosticReport.presentedForm[0].data",
        HELLO[:4],
    ),
    (
        "attachment data with a line break",
        report({"data": HELLO[:8] + "\n" + HELLO[8:]}),
        "invalid-base64 DiagnosticReport.presentedForm[0].data",
        HELLO[:8],
    ),
    (
        "attachment hash of other data",
        report({"data": HELLO, "hash": base64.b64encode(b"\x00" * 20).decode()}),
        "hash-mismatch DiagnosticReport.presentedForm[0].hash",
        HELLO,
    ),
    ("canonical absolute", procedure("urn:uuid:00000000-0000-4000-8000-000000000001"), None, None),
    ("canonical fragment", procedure("#plan"), None, None),
    ("canonical with a version", procedure("http://example.org/PlanDefinition/p|2"), None, None),
    (
        "canonical relative",
        procedure("PlanDefinition/KDN5"),
        "invalid-canonical Procedure.instantiatesCanonical[1]",
        "KDN5",
    ),
    (
        "meta.profile relative",
        {**observation(quantity("mg")), "meta": {"profile": ["StructureDefinition/x"]}},
        "invalid-canonical Observation.meta.profile[0]",
        "StructureDefinition/x",
    ),
    (
        "a contained resource's canonical",
        {**medication_request(quantity("mg")), "instantiatesCanonical": ["ActivityDefinition/a"]},
        "invalid-canonical MedicationRequest.instantiatesCanonical[0]",
        "ActivityDefinition/a",
    ),
]


@pytest.mark.parametrize(
    ("resource", "expected", "value"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_datatype_rules_refuse_naming_the_element_never_the_value(
    resource: dict[str, Any], expected: str | None, value: str | None
) -> None:
    result = process_ingest(orjson.dumps(resource), "src", "m1", "R4", {})
    if expected is None:
        assert result.rejection is None, result.rejection
        return
    rejection = result.rejection
    assert rejection is not None
    code, element = expected.split(" ")
    assert (rejection.code, rejection.issues[0].expression) == (code, element)
    assert rejection.issues[0].code == code
    assert value is not None
    texts = [rejection.detail, *(f"{i.expression} {i.detail}" for i in rejection.issues)]
    assert not [text for text in texts if value in text]


def _spellings(resource: dict[str, Any]) -> list[bytes]:
    """The same resource as compact, indented, `\\/`-escaped and `\\u`-escaped JSON."""
    compact = orjson.dumps(resource)
    spaced = json.dumps(resource, indent=2).encode()
    return [
        compact,
        spaced,
        compact.replace(b"/", b"\\/"),
        json.dumps(resource, ensure_ascii=True).replace("o", "\\u006f").encode(),
    ]


@pytest.mark.parametrize("resource", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_the_verdict_does_not_depend_on_the_json_spelling(resource: dict[str, Any]) -> None:
    family = "R4B"
    on_tree = datatype_issues(None, resource, family)
    for body in _spellings(resource):
        assert orjson.loads(body) == resource
        assert datatype_issues(body, resource, family) == on_tree


TRICKS = [
    # braces and system URLs inside strings, around a bad unit: the bytes prove nothing
    {"unit": "}", "system": UCUM, "code": "mEq"},
    {"unit": "{", "system": UCUM, "code": "mEq"},
    {"unit": '{"system":"http://unitsofmeasure.org"}', "system": UCUM, "code": "mEq"},
    {"unit": f'{{"system": "{UCUM}", "code": "mg"}}', "system": UCUM, "code": "mEq"},
    {"code": "mEq", "system": UCUM, "unit": UCUM},
]


@pytest.mark.parametrize("value", TRICKS)
def test_strings_that_look_like_json_do_not_hide_a_bad_unit(value: dict[str, Any]) -> None:
    resource = {**observation(value), "note": [{"text": f'{{"system":"{UCUM}","code":"mg"}}'}]}
    issues = datatype_issues(orjson.dumps(resource), resource, "R4B")
    assert [(i.code, i.expression) for i in issues] == [
        ("invalid-unit", "Observation.valueQuantity.code")
    ]


@pytest.mark.parametrize(
    ("unit", "valid"),
    [
        ("mg", True),
        ("mL/h", True),
        ("/min", True),
        ("kg/m2", True),
        ("[IU]", True),
        ("Cel", True),
        ("drop", False),
        ("mcg", False),
        ("ml/hr", False),
        ("mEq", False),
        ("ea", False),
        ("", False),
    ],
)
def test_ucum_grammar(unit: str, valid: bool) -> None:
    assert is_ucum_unit(unit) is valid


def test_the_drug_form_codes_come_from_the_generated_file() -> None:
    codes = CODE_SYSTEMS[DRUG_FORM]
    assert {"TAB", "CAP", "PATCH", "_AdministrableDrugForm"} <= codes
    assert not {"Tab", "tab", "patch"} & codes
    assert len(codes) == 161


def test_an_r5_resource_is_checked_with_the_r5_models() -> None:
    r5 = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "valueQuantity": {"value": 1, "system": UCUM, "code": "mEq"},
        "instantiatesCanonical": "ObservationDefinition/x",
    }
    issues = datatype_issues(orjson.dumps(r5), r5, "R5")
    assert [(i.code, i.expression) for i in issues] == [
        ("invalid-unit", "Observation.valueQuantity.code"),
        ("invalid-canonical", "Observation.instantiatesCanonical"),
    ]


_TEXT = st.text(alphabet='{}[]":,\\/ abmgL%' + UCUM[:12], max_size=30)


@settings(max_examples=200, deadline=None)
@given(
    unit=_TEXT,
    note=_TEXT,
    code=st.sampled_from(["mg", "mEq", "{tbl}", "drop", "mL/h", "}", '"{']) | st.text(max_size=8),
    system=st.sampled_from([UCUM, DRUG_FORM, "http://example.org/units"]),
)
def test_the_bytes_shortcut_agrees_with_the_tree(
    unit: str, note: str, code: str, system: str
) -> None:
    value = {"value": 1, "unit": unit, "system": system, "code": code}
    resource = {**observation(value), "note": [{"text": note}]}
    for body in _spellings(resource)[:2]:
        found = datatype_issues(body, resource, "R4B")
        assert found == datatype_issues(None, resource, "R4B")
