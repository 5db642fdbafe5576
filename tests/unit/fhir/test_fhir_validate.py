"""Validation: release detection (R4 via R4B, R5), rejection codes, value-free details."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from caremesh.errors import InvalidFhirError
from caremesh.fhir.ingest import process_ingest
from caremesh.fhir.validate import (
    normalise_release,
    release_from_content_type,
    validate_resource,
)

R4_CONSENT: dict[str, Any] = {
    "resourceType": "Consent",
    "status": "active",
    "scope": {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                "code": "patient-privacy",
            }
        ]
    },
    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
    "patient": {"reference": "Patient/p1"},
    "provision": {"type": "deny"},
}
R5_CONSENT: dict[str, Any] = {
    "resourceType": "Consent",
    "status": "active",
    "subject": {"reference": "Patient/p1"},
    "decision": "deny",
    "provision": [{"purpose": [{"code": "HRESCH"}]}],
}
R4_ENCOUNTER: dict[str, Any] = {
    "resourceType": "Encounter",
    "status": "in-progress",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
}
R5_ENCOUNTER: dict[str, Any] = {
    "resourceType": "Encounter",
    "status": "in-progress",
    "class": [{"coding": [{"code": "IMP"}]}],
}
PATIENT: dict[str, Any] = {"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"}


@pytest.mark.parametrize(
    ("resource", "hint", "release"),
    [
        (PATIENT, None, "R4B"),
        (PATIENT, "R4", "R4"),
        (PATIENT, "4.0.1", "R4"),
        (PATIENT, "R4B", "R4B"),
        (PATIENT, "R5", "R5"),
        (R4_CONSENT, None, "R4B"),
        (R4_CONSENT, "R4", "R4"),
        (R5_CONSENT, None, "R5"),
        (R5_CONSENT, "5.0.0", "R5"),
        (R4_ENCOUNTER, None, "R4B"),
        (R5_ENCOUNTER, None, "R5"),
        ({"resourceType": "ActorDefinition", "status": "active", "type": "person"}, None, "R5"),
        (
            {"resourceType": "Media", "status": "completed", "content": {"contentType": "x/y"}},
            None,
            "R4B",
        ),
    ],
)
def test_accepts_and_labels_release(
    resource: dict[str, Any], hint: str | None, release: str
) -> None:
    valid = validate_resource(resource, hint)
    assert (valid.resource_type, valid.release) == (resource["resourceType"], release)


@pytest.mark.parametrize(
    ("resource", "hint", "code", "in_detail"),
    [
        (R5_CONSENT, "R4", "validation-failed", "<unknown> (extra_forbidden)"),
        (R4_CONSENT, "R5", "validation-failed", "provision (list_type)"),
        (R5_ENCOUNTER, "R4B", "validation-failed", "class"),
        ({"resourceType": "Media", "status": "completed"}, "R5", "unknown-resource-type", "R5"),
        ({"resourceType": "Patientt"}, None, "unknown-resource-type", "R4B or R5"),
        ({"resourceType": "Address", "city": "x"}, None, "unknown-resource-type", ""),
        ({"resourceType": "DomainResource"}, None, "unknown-resource-type", ""),
        ({"resourceType": "__class__"}, None, "unknown-resource-type", ""),
        ({"resourceType": 7}, None, "missing-resource-type", ""),
        ({"id": "x"}, None, "missing-resource-type", ""),
        ({"resourceType": "Observation"}, None, "validation-failed", "code (missing)"),
        (
            {"resourceType": "Observation", "code": {"text": "x"}},
            None,
            "validation-failed",
            "status (model_field_validation.missing)",
        ),
        ({"resourceType": "Patient", "birthDate": "1950-13-45"}, None, "validation-failed", ""),
        ({"resourceType": "Patient", "unknownElement": 1}, None, "validation-failed", ""),
        (PATIENT, "STU3", "unsupported-release", ""),
        ([PATIENT], None, "not-an-object", ""),
        ("Patient", None, "not-an-object", ""),
    ],
)
def test_rejects_with_code(resource: object, hint: str | None, code: str, in_detail: str) -> None:
    with pytest.raises(InvalidFhirError) as caught:
        validate_resource(resource, hint)
    assert caught.value.code == code
    assert in_detail in caught.value.detail


def test_detail_names_type_and_element_path_but_not_value() -> None:
    resource = {"resourceType": "Patient", "birthDate": "SYNTH-NOT-A-DATE"}
    with pytest.raises(InvalidFhirError) as caught:
        validate_resource(resource, "R4")
    assert caught.value.detail.startswith("Patient is not valid as R4B")
    assert "birthDate (value_error)" in caught.value.detail
    assert "SYNTH-NOT-A-DATE" not in str(caught.value)


def test_unknown_element_names_are_not_echoed() -> None:
    resource = {"resourceType": "Patient", "name": [{"family": "X", "SYNTHKEYNAME": 1}]}
    with pytest.raises(InvalidFhirError) as caught:
        validate_resource(resource, "R4")
    assert "name[0].<unknown> (extra_forbidden)" in caught.value.detail
    assert "SYNTHKEYNAME" not in caught.value.detail


def test_auto_detection_reports_both_releases() -> None:
    with pytest.raises(InvalidFhirError) as caught:
        validate_resource({"resourceType": "Observation"}, None)
    assert "as R4B:" in caught.value.detail
    assert "as R5:" in caught.value.detail


def test_nested_entry_errors_carry_entry_path() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": PATIENT}, {"resource": {"resourceType": "Observation"}}],
    }
    with pytest.raises(InvalidFhirError) as caught:
        validate_resource(bundle, "R4")
    assert "entry[1].resource.code (missing)" in caught.value.detail
    assert "entry[0]" not in caught.value.detail


def _nested_extension(depth: int) -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "http://example.org/x", "valueString": "v"}
    for _ in range(depth):
        extension = {"url": "http://example.org/x", "extension": [extension]}
    return {"resourceType": "Patient", "extension": [extension]}


def test_deep_but_parseable_resource_is_too_deep_not_a_crash() -> None:
    with pytest.raises(InvalidFhirError) as caught:
        validate_resource(_nested_extension(400), None)
    assert caught.value.code == "too-deep"


def test_moderately_nested_extensions_still_validate() -> None:
    assert validate_resource(_nested_extension(20), None).release == "R4B"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "empty-body"),
        (b"  \n\t ", "empty-body"),
        (b"{not json", "invalid-json"),
        (b'{"resourceType": "Patient",}', "invalid-json"),
        (b"[" * 100_000 + b"]" * 100_000, "too-deep"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "too-deep"),
        (b"[" * 1025 + b"]" * 1025, "too-deep"),
        (b'{"resourceType": "Patient", "id": "\xff\xfe"}', "invalid-utf8"),
        (b'{"resourceType": "Patient", "id": "\xed\xa0\x80"}', "invalid-utf8"),
        (b"[]", "not-an-object"),
        (b"null", "not-an-object"),
        (b"42", "not-an-object"),
    ],
)
def test_body_level_rejections(body: bytes, code: str) -> None:
    result = process_ingest(body, "synth-src", "m-1", None, {})
    assert not result.accepted
    assert result.records == ()
    assert result.rejection is not None
    assert result.rejection.code == code


def test_orjson_depth_limit_is_1024() -> None:
    assert orjson.loads(b"[" * 1024 + b"]" * 1024) is not None
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(b"[" * 1025 + b"]" * 1025)


@pytest.mark.parametrize(
    ("content_type", "release"),
    [
        ("application/fhir+json", None),
        ("application/fhir+json; fhirVersion=4.0", "R4"),
        ("application/fhir+json;fhirVersion=4.3", "R4B"),
        ('application/fhir+json; charset=utf-8; fhirversion="5.0"', "R5"),
        (None, None),
    ],
)
def test_release_from_content_type(content_type: str | None, release: str | None) -> None:
    assert release_from_content_type(content_type) == release


def test_release_from_content_type_rejects_unknown_version() -> None:
    with pytest.raises(InvalidFhirError) as caught:
        release_from_content_type("application/fhir+json; fhirVersion=3.0")
    assert caught.value.code == "unsupported-release"


@pytest.mark.parametrize(
    ("text", "release"),
    [("r4", "R4"), ("R4B", "R4B"), ("4.3.0", "R4B"), (" R5 ", "R5"), ("", None), (None, None)],
)
def test_normalise_release(text: str | None, release: str | None) -> None:
    assert normalise_release(text) == release
