"""FHIR OperationOutcome bodies and HTTP statuses for the refusals of the ingest API.

Follows FHIR R4 (4.0.1) and R5 (5.0.0) OperationOutcome, whose shape used here is the same in
both: `issue[].severity` (IssueSeverity), `issue[].code` (IssueType value set
http://hl7.org/fhir/ValueSet/issue-type), `issue[].details.coding` (our error code) and
`issue[].diagnostics` (`<code>: <detail>`). Details are value-free texts (codes, element paths);
nothing a sender posted is ever copied into an outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from caremesh.errors import FhirIssue

ERROR_CODE_SYSTEM: Final = "urn:caremesh:error-code"
"""The coding system of caremesh's error codes in `issue.details.coding`."""

_ISSUE_TYPES: Final[Mapping[str, str]] = {
    "unauthorized": "login",
    "forbidden": "forbidden",
    "too-large": "too-long",
    "unsupported-media-type": "not-supported",
    "unsupported-release": "not-supported",
    "unknown-resource-type": "not-supported",
    "unsupported-bundle-type": "not-supported",
    "empty-body": "required",
    "missing-resource-type": "required",
    "invalid-utf8": "structure",
    "invalid-json": "structure",
    "too-deep": "structure",
    "not-an-object": "structure",
    "validation-failed": "invalid",
    "invalid-code": "code-invalid",
    "duplicate-key": "structure",
    "empty-element": "structure",
    "invalid-oid": "value",
    "invalid-unit": "code-invalid",
    "unknown-code": "code-invalid",
    "invalid-base64": "value",
    "hash-mismatch": "value",
    "invalid-canonical": "value",
    "too-many-entries": "too-costly",
    "unresolved-reference": "invalid",
    "duplicate-full-url": "invalid",
    "resource-type-mismatch": "invalid",
    "not-a-bundle": "invalid",
    "invalid-idempotency-key": "invalid",
    "kafka-unavailable": "transient",
    "not-found": "not-found",
    "method-not-allowed": "not-supported",
    "internal-error": "exception",
}

_HTTP_STATUS: Final[Mapping[str, int]] = {
    "unauthorized": 401,
    "forbidden": 403,
    "not-found": 404,
    "method-not-allowed": 405,
    "too-large": 413,
    "unsupported-media-type": 415,
    "validation-failed": 422,
    "invalid-code": 422,
    "empty-element": 422,
    "invalid-oid": 422,
    "invalid-unit": 422,
    "unknown-code": 422,
    "invalid-base64": 422,
    "hash-mismatch": 422,
    "invalid-canonical": 422,
    "too-many-entries": 422,
    "unresolved-reference": 422,
    "duplicate-full-url": 422,
    "unknown-resource-type": 422,
    "unsupported-bundle-type": 422,
    "kafka-unavailable": 503,
    "internal-error": 500,
}


def issue_type(code: str) -> str:
    """The FHIR IssueType of a caremesh error code (`invalid` for codes not listed)."""
    return _ISSUE_TYPES.get(code, "invalid")


def http_status(code: str) -> int:
    """The HTTP status of a refusal: 401, 404, 405, 413, 415, 422, 500, 503, else 400."""
    return _HTTP_STATUS.get(code, 400)


def operation_outcome(
    code: str, detail: str, *, severity: str = "error", issues: Sequence[FhirIssue] = ()
) -> dict[str, Any]:
    """An OperationOutcome for `code`; `detail` must be value-free.

    Without `issues` it has one issue; with them, one issue per element at fault, each with
    its FHIRPath-like location in `expression` (and `location`, which R4 still reads).
    """
    if not issues:
        return {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": severity,
                    "code": issue_type(code),
                    "details": {"coding": [{"system": ERROR_CODE_SYSTEM, "code": code}]},
                    "diagnostics": f"{code}: {detail}",
                }
            ],
        }
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": severity,
                "code": issue_type(issue.code),
                "details": {"coding": [{"system": ERROR_CODE_SYSTEM, "code": issue.code}]},
                "diagnostics": f"{issue.code}: {issue.expression} {issue.detail}",
                "expression": [issue.expression],
                "location": [issue.expression],
            }
            for issue in issues
        ],
    }


def outcome_bytes(code: str, detail: str, issues: Sequence[FhirIssue] = ()) -> bytes:
    """`operation_outcome` serialised as JSON bytes."""
    return orjson.dumps(operation_outcome(code, detail, issues=issues))
