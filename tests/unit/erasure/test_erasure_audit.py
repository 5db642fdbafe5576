"""The erasure AuditEvent is valid FHIR R4 and names the patient only where auditors read it."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from caremesh.audit.events import CONSENT_ADMIN_SYSTEM, PATIENT_KEY_SYSTEM, erasure_audit_event
from caremesh.consent import Decision, Outcome, Rule
from caremesh.consent.erasure import (
    REASON_ERASURE,
    REASON_WITHDRAWN,
    retraction_reason,
)
from caremesh.envelope import PatientKey

PATIENT = PatientKey("2990175000042")
AT = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


def test_erasure_audit_event_is_valid_and_names_patient_and_requestor() -> None:
    event = erasure_audit_event(
        PATIENT, erased_at=AT, event_id="a-1", recorded=AT, observer="api", requestor="alice"
    )
    AuditEvent.model_validate(event)  # raises when not valid R4 (R4B shares the model)
    assert (event["action"], event["outcome"], event["type"]["code"]) == ("D", "0", "110110")
    [entity] = event["entity"]
    assert entity["what"]["identifier"] == {"system": PATIENT_KEY_SYSTEM, "value": PATIENT}
    requestors = [a for a in event["agent"] if a["requestor"]]
    assert [a["who"] for a in requestors] == [
        {"identifier": {"system": CONSENT_ADMIN_SYSTEM, "value": "alice"}}
    ]
    text = orjson.dumps(event).decode()
    assert text.count(PATIENT) == 1  # only in the patient entity


def test_without_requestor_the_application_is_the_requestor() -> None:
    event = erasure_audit_event(PATIENT, erased_at=AT, event_id="a-2", recorded=AT, observer="x")
    AuditEvent.model_validate(event)
    assert [a["requestor"] for a in event["agent"]] == [True]


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        (Rule.ERASED, REASON_ERASURE),
        (Rule.WITHDRAWN, REASON_WITHDRAWN),
        (Rule.NO_ACTIVE_CONSENT, REASON_WITHDRAWN),
        (Rule.CONSENT_PROVISION, REASON_WITHDRAWN),
    ],
)
def test_retraction_reason(rule: Rule, reason: str) -> None:
    assert retraction_reason(Decision(Outcome.DENY, rule, "HRESCH")) == reason
