"""What the consent API accepts: the patient key of a posted Consent, its id and timestamp."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from caremesh.consent.requests import (
    ConsentRequestError,
    check_consent,
    date_param,
    patient_param,
    references_param,
    resource_param,
)
from caremesh.envelope import PatientKey
from tests.unit.consent.consent_builders import INS, PATIENT, provision, r4_consent, r5_consent

NOW = datetime(2025, 6, 1, 12, 0, 0, 250000, tzinfo=UTC)
GIVEN = PatientKey("synth-hosp/Patient/p-1")


def _r4() -> dict[str, Any]:
    return r4_consent("c1", provision("permit", purposes=["TREAT"]))


def _r5_with(subject: dict[str, Any]) -> dict[str, Any]:
    return {**r5_consent("c5", "permit"), "subject": subject}


@pytest.mark.parametrize(
    ("body", "given", "expected"),
    [
        pytest.param(_r4(), None, PATIENT, id="r4-ins-identifier"),
        pytest.param(_r4(), PatientKey(PATIENT), PATIENT, id="r4-ins-agrees-with-given"),
        pytest.param(
            _r5_with({"identifier": {"system": INS, "value": PATIENT}}), None, PATIENT, id="r5-ins"
        ),
        pytest.param(
            _r5_with({"reference": f"Patient?identifier={INS}|{PATIENT}"}),
            None,
            PATIENT,
            id="r5-conditional-reference",
        ),
        pytest.param(_r5_with({"reference": "Patient/p-1"}), GIVEN, GIVEN, id="r5-local-given"),
    ],
)
def test_patient_key_of_a_consent(
    body: dict[str, Any], given: PatientKey | None, expected: str
) -> None:
    assert check_consent(body, None, None, given, NOW).patient == expected


@pytest.mark.parametrize(
    ("body", "given", "path_id", "code", "status"),
    [
        pytest.param(
            _r5_with({"reference": "Patient/p-1"}), None, None, "patient-key-required", 422
        ),
        pytest.param(_r4(), GIVEN, None, "patient-mismatch", 422),
        pytest.param(_r4(), None, "other", "id-mismatch", 400),
        pytest.param({**_r4(), "id": "bad id!"}, None, None, "invalid-id", 422),
        pytest.param({"resourceType": "Patient"}, None, None, "not-a-consent", 422),
    ],
)
def test_refusals(
    body: dict[str, Any], given: PatientKey | None, path_id: str | None, code: str, status: int
) -> None:
    with pytest.raises(ConsentRequestError) as caught:
        check_consent(body, None, path_id, given, NOW)
    assert (caught.value.code, caught.value.status) == (code, status)


def test_id_and_last_updated_are_set_and_make_the_recorded_instant() -> None:
    body = {
        k: v for k, v in _r5_with({"reference": "Patient/p-1"}).items() if k not in ("id", "date")
    }
    checked = check_consent(body, "application/fhir+json; fhirVersion=5.0", None, GIVEN, NOW)
    assert checked.body["meta"]["lastUpdated"] == "2025-06-01T12:00:00.250+00:00"
    assert checked.consent.recorded == NOW
    assert checked.consent.id == checked.body["id"]
    assert "id" not in body  # the caller's dict is left alone


@pytest.mark.parametrize("value", ["", "../x", "a b", "x" * 201])
def test_bad_patient_parameters(value: str) -> None:
    with pytest.raises(ConsentRequestError):
        patient_param(value)


_BY_REFERENCE = r5_consent("by-ref", "deny")  # subject: Patient/p-1, no INS


@pytest.mark.parametrize(
    ("learned", "key"),
    [
        pytest.param({}, "hosp-a/Patient/p-1", id="source-key-without-a-learned-ins"),
        pytest.param(
            {"hosp-a/Patient/p-1": "1840275999888"}, "1840275999888", id="the-learned-ins"
        ),
        pytest.param(
            {"hosp-b/Patient/p-1": "1840275999888"}, "hosp-a/Patient/p-1", id="not-another-sources"
        ),
    ],
)
def test_a_source_posting_by_reference_gets_its_records_key(
    learned: dict[str, str], key: str
) -> None:
    checked = check_consent(_BY_REFERENCE, None, None, None, source="hosp-a", learned=learned)
    assert checked.patient == key


def test_a_consent_by_reference_without_a_source_needs_a_patient_key() -> None:
    with pytest.raises(ConsentRequestError) as caught:
        check_consent(_BY_REFERENCE, None, None, None)
    assert caught.value.code == "patient-key-required"
    assert "p-1" not in caught.value.detail


def test_references_absent_are_unknown_and_present_even_empty_are_all_there_is() -> None:
    assert references_param(None) is None
    assert references_param("") == frozenset()
    assert references_param("Task/t1,ServiceRequest/s2") == {"Task/t1", "ServiceRequest/s2"}


@pytest.mark.parametrize(
    ("call", "code"),
    [
        pytest.param(lambda: resource_param("not a reference"), "invalid-resource", id="resource"),
        pytest.param(lambda: references_param("Task/t1,../x"), "invalid-references", id="refs"),
        pytest.param(lambda: date_param("2015-13-01", "dataDate"), "invalid-date", id="date"),
    ],
)
def test_bad_data_parameters_are_refused_without_their_values(call: Any, code: str) -> None:
    with pytest.raises(ConsentRequestError) as caught:
        call()
    assert caught.value.code == code
    assert "../x" not in str(caught.value)
    assert "2015-13-01" not in str(caught.value)


def test_a_data_date_is_its_first_instant() -> None:
    assert date_param("2015-01-15", "dataDate") == datetime(2015, 1, 15, tzinfo=UTC)
