"""AuditEvent records for decisions, consent changes and deliveries validate as FHIR R4(B)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from caremesh.audit.events import (
    CONSENT_ADMIN_SYSTEM,
    PATIENT_KEY_SYSTEM,
    consent_change_audit_event,
    decision_audit_event,
    delivery_audit_event,
)
from caremesh.consent import (
    ConsentUpserted,
    ConsentWithdrawn,
    PatientConsents,
    Rule,
    apply,
    evaluate,
    parse_consent,
)
from caremesh.envelope import MessageId
from tests.unit.consent.consent_builders import (
    ORG_A,
    ORG_B,
    ORG_C_ID,
    PATIENT,
    provision,
    query,
    r4_consent,
    r5_consent,
)

RECORDED = datetime(2025, 6, 1, 12, 0, 5, tzinfo=UTC)
EVENT_ID = "5b0f6f1e-8a43-5d4e-9c2a-1f0e3d2c1b0a"


def _valid(event: dict[str, Any]) -> AuditEvent:
    wire = orjson.loads(orjson.dumps(event))
    return AuditEvent.model_validate(wire)


def _consents() -> PatientConsents:
    data = r4_consent("c1", provision("deny", purposes=["TREAT"], sub=[provision(actors=[ORG_A])]))
    return apply(PatientConsents(), ConsentUpserted(parse_consent(data)))


@pytest.mark.parametrize(
    ("actor", "outcome_code"),
    [
        pytest.param(ORG_A, "0", id="permit-is-success"),
        pytest.param(ORG_B, "8", id="deny-is-serious-failure"),
        pytest.param(ORG_C_ID, "8", id="recipient-by-identifier"),
    ],
)
def test_decision_audit_event(actor: Any, outcome_code: str) -> None:
    q = query("ETREAT", actor)
    decision = evaluate(_consents().consents, q)
    event = _valid(
        decision_audit_event(q, decision, event_id=EVENT_ID, recorded=RECORDED, observer="share")
    )
    assert event.id == EVENT_ID
    assert event.type.code == "110113"
    assert event.outcome == outcome_code
    assert event.purposeOfEvent[0].coding[0].code == "ETREAT"
    recipient = event.agent[1]
    assert recipient.requestor is False
    if actor.reference:
        assert recipient.who.reference == actor.reference
    else:
        assert (
            f"{recipient.who.identifier.system}|{recipient.who.identifier.value}"
            == actor.identifier
        )
    patient, consent = event.entity[0], event.entity[1]
    assert (patient.what.identifier.system, patient.what.identifier.value) == (
        PATIENT_KEY_SYSTEM,
        PATIENT,
    )
    assert consent.what.reference == "Consent/c1"
    details = {d.type: d.valueString for d in consent.detail}
    assert details["rule"] == decision.rule.value
    assert details["provision"] == decision.provision


def test_default_decision_names_no_consent_and_no_recipient() -> None:
    q = query("HRESCH", None, resource_type=None)
    decision = evaluate([], q)
    assert decision.rule is Rule.NO_ACTIVE_CONSENT
    event = _valid(
        decision_audit_event(q, decision, event_id="e1", recorded=RECORDED, observer="research")
    )
    assert event.outcome == "8"
    assert event.outcomeDesc == "deny: no-active-consent"
    assert len(event.agent) == 1
    assert [e.what.identifier.value for e in event.entity] == [PATIENT]


@pytest.mark.parametrize(
    ("event", "action", "purpose"),
    [
        pytest.param(
            ConsentUpserted(parse_consent(r5_consent("c9", "permit"))), "U", None, id="upsert"
        ),
        pytest.param(
            ConsentUpserted(parse_consent(r5_consent("c9", None, status="entered-in-error"))),
            "D",
            None,
            id="entered-in-error",
        ),
        pytest.param(
            ConsentWithdrawn("c9", datetime(2025, 1, 1, tzinfo=UTC), "HRESCH"),
            "U",
            "HRESCH",
            id="withdrawal",
        ),
    ],
)
def test_consent_change_audit_event(event: Any, action: str, purpose: str | None) -> None:
    audit = _valid(
        consent_change_audit_event(
            event, PATIENT, event_id="e2", recorded=RECORDED, observer="consent-api"
        )
    )
    assert audit.type.code == "110110"
    assert audit.action == action
    assert audit.entity[1].what.reference == "Consent/c9"
    codes = [p.coding[0].code for p in audit.purposeOfEvent or []]
    assert codes == ([purpose] if purpose else [])


def test_consent_change_names_the_administrator_who_asked() -> None:
    event = ConsentWithdrawn("c9", datetime(2025, 1, 1, tzinfo=UTC))
    audit = _valid(
        consent_change_audit_event(
            event, PATIENT, event_id="e3", recorded=RECORDED, observer="api", requestor="alice"
        )
    )
    requestors = [a for a in audit.agent if a.requestor]
    assert len(requestors) == 1
    assert requestors[0].who.identifier.system == CONSENT_ADMIN_SYSTEM
    assert requestors[0].who.identifier.value == "alice"


@pytest.mark.parametrize(
    ("error_code", "outcome"),
    [pytest.param(None, "0", id="delivered"), pytest.param("http-503", "8", id="failed")],
)
def test_delivery_audit_event(error_code: str | None, outcome: str) -> None:
    audit = _valid(
        delivery_audit_event(
            patient=PATIENT,
            recipient=ORG_A,
            purpose="TREAT",
            message_id=MessageId("m-1"),
            resource="Observation/o-1",
            consent_ids=["c1"],
            error_code=error_code,
            event_id="e3",
            recorded=RECORDED,
            observer="fhir-delivery",
        )
    )
    assert audit.type.code == "110106"
    assert audit.outcome == outcome
    assert audit.agent[1].who.reference == ORG_A.reference
    assert audit.entity[1].what.reference == "Observation/o-1"
    assert audit.entity[1].detail[0].valueString == "m-1"
    assert audit.entity[2].what.reference == "Consent/c1"
    assert audit.outcomeDesc == ("delivered" if error_code is None else f"failed: {error_code}")
