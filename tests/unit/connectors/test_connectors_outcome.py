"""OperationOutcome bodies: valid FHIR (R4B and R5), the right status, no input value in them."""

from __future__ import annotations

import orjson
import pytest
from fhir.resources.operationoutcome import OperationOutcome as R5Outcome
from fhir.resources.R4B.operationoutcome import OperationOutcome as R4BOutcome

from caremesh.connectors.fhir_checks import check_fhir
from caremesh.connectors.http.outcome import (
    ERROR_CODE_SYSTEM,
    http_status,
    operation_outcome,
    outcome_bytes,
)
from caremesh.errors import FhirIssue
from caremesh.fhir.ingest import Rejection
from tests.unit.connectors.connectors_synth import SYNTH_FAMILY, SYNTH_GIVEN, dumps, patient


@pytest.mark.parametrize(
    ("code", "status", "issue"),
    [
        ("unauthorized", 401, "login"),
        ("too-large", 413, "too-long"),
        ("unsupported-media-type", 415, "not-supported"),
        ("invalid-json", 400, "structure"),
        ("invalid-utf8", 400, "structure"),
        ("too-deep", 400, "structure"),
        ("empty-body", 400, "required"),
        ("resource-type-mismatch", 400, "invalid"),
        ("validation-failed", 422, "invalid"),
        ("invalid-unit", 422, "code-invalid"),
        ("unknown-code", 422, "code-invalid"),
        ("invalid-base64", 422, "value"),
        ("hash-mismatch", 422, "value"),
        ("invalid-canonical", 422, "value"),
        ("unsupported-bundle-type", 422, "not-supported"),
        ("kafka-unavailable", 503, "transient"),
        ("something-new", 400, "invalid"),
    ],
)
def test_status_and_issue_type_per_code(code: str, status: int, issue: str) -> None:
    body = operation_outcome(code, "a detail")
    assert http_status(code) == status
    assert body["issue"][0]["code"] == issue
    assert body["issue"][0]["severity"] == "error"
    assert body["issue"][0]["details"]["coding"] == [{"system": ERROR_CODE_SYSTEM, "code": code}]
    assert body["issue"][0]["diagnostics"] == f"{code}: a detail"


@pytest.mark.parametrize("model", [R4BOutcome, R5Outcome], ids=["R4B", "R5"])
def test_outcome_is_a_valid_operation_outcome(model: type) -> None:
    model.model_validate(orjson.loads(outcome_bytes("validation-failed", "Patient.birthDate")))


@pytest.mark.parametrize(
    "bad",
    [
        patient(birthDate=f"{SYNTH_GIVEN}-1950"),
        patient(active=SYNTH_FAMILY),
        patient(name=SYNTH_FAMILY),
        patient(telecom=[{"system": "phone", "value": 6}]),
        {**patient(), SYNTH_FAMILY: SYNTH_GIVEN},
    ],
    ids=["bad date", "bad boolean", "wrong shape", "wrong type", "unknown element"],
)
def test_a_rejection_outcome_never_carries_input_values(bad: dict[str, object]) -> None:
    rejected = check_fhir(dumps(bad), source="s1", release_hint=None)
    assert isinstance(rejected, Rejection)
    text = outcome_bytes(rejected.code, rejected.detail).decode()
    assert rejected.code == "validation-failed"
    assert SYNTH_FAMILY not in text
    assert SYNTH_GIVEN not in text


def test_each_element_at_fault_is_one_issue_with_its_expression() -> None:
    from caremesh.connectors.http.outcome import operation_outcome

    issues = (
        FhirIssue("invalid-code", "Observation.status", "is not a code of its value set"),
        FhirIssue("duplicate-key", "Observation.code.text", "appears twice"),
    )
    outcome = operation_outcome("invalid-code", "two problems", issues=issues)
    assert [issue["expression"] for issue in outcome["issue"]] == [
        ["Observation.status"],
        ["Observation.code.text"],
    ]
    assert [issue["code"] for issue in outcome["issue"]] == ["code-invalid", "structure"]
    assert [i["details"]["coding"][0]["code"] for i in outcome["issue"]] == [
        "invalid-code",
        "duplicate-key",
    ]
    assert (
        outcome["issue"][1]["diagnostics"] == "duplicate-key: Observation.code.text appears twice"
    )
