"""Alerts as FHIR R4 Communication, and coordinator actions on pathway.actions.v1."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.communication import Communication

from caremesh.errors import RejectedInputError
from caremesh.pathways import (
    AlertCandidate,
    action_value,
    apply_action,
    build_communication,
    make_action,
    parse_action,
)
from caremesh.pathways.alert import INS_SYSTEM, PATIENT_KEY_SYSTEM
from tests.unit.pathways.pathway_fixtures import (
    OTHER_PATIENT,
    PATIENT,
    SHIPPED,
    SNOMED,
    at,
    condition,
    feed,
    observation,
)

HF = SHIPPED["heart-failure"]


def weight_alert(patient_key: str = PATIENT) -> tuple[object, AlertCandidate]:
    state, raised = feed(
        HF,
        [
            (condition("hf-1", SNOMED, "84114007"), at(0)),
            (observation("w1", "29463-7", 80.0, "kg", when=at(0)), at(0)),
            (observation("w2", "29463-7", 82.6, "kg", when=at(2)), at(2)),
        ],
        patient_key=patient_key,  # type: ignore[arg-type]
    )
    assert len(raised) == 1
    return state, raised[0]


def test_communication_validates_as_r4_and_carries_the_alert() -> None:
    _, alert = weight_alert()
    body = build_communication(alert)
    model = Communication.model_validate(body)
    assert model.status == "in-progress"
    assert model.priority == "asap"  # severity high
    assert body["id"] == alert.alert_id
    assert body["identifier"] == [
        {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{alert.alert_id}"}
    ]
    assert body["category"][0]["coding"][0]["code"] == "alert"
    assert body["recipient"] == [{"reference": "Organization/care-coordination"}]
    assert body["subject"]["identifier"] == {"system": INS_SYSTEM, "value": PATIENT}
    assert body["about"] == [{"reference": "Observation/w1"}, {"reference": "Observation/w2"}]
    assert body["sent"] == "2025-03-03T08:00:00Z"
    tags = {(t["system"].rsplit("/", 1)[1], t["code"]) for t in body["meta"]["tag"]}
    assert tags == {
        ("pathway", "heart-failure"),
        ("pathway-rule", "heart-failure/weight-gain-3d"),
        ("alert-severity", "high"),
    }
    assert body["extension"][0]["valueReference"] == {"reference": "Condition/hf-1"}


def test_payload_is_the_rule_text_without_patient_data() -> None:
    _, alert = weight_alert()
    body = build_communication(alert)
    rule = next(r for r in HF.rules if r.id == "weight-gain-3d")
    assert body["payload"] == [{"contentString": rule.text}]
    text = json.dumps(body["payload"]) + json.dumps(body["topic"])
    for value in (PATIENT, "82.6", "80.0", "w1", "hf-1"):
        assert value not in text


def test_source_scoped_patient_key_uses_the_caremesh_system() -> None:
    _, alert = weight_alert(OTHER_PATIENT)
    body = build_communication(alert)
    Communication.model_validate(body)
    assert body["subject"]["identifier"] == {"system": PATIENT_KEY_SYSTEM, "value": OTHER_PATIENT}


@pytest.mark.parametrize(
    ("severity", "priority"),
    [("low", "routine"), ("medium", "urgent"), ("high", "asap"), ("critical", "stat")],
)
def test_priority_from_severity(severity: str, priority: str) -> None:
    _, alert = weight_alert()
    body = build_communication(
        AlertCandidate(**{**{f: getattr(alert, f) for f in alert.__slots__}, "severity": severity})
    )
    assert Communication.model_validate(body).priority == priority


def test_action_round_trip_and_closing() -> None:
    state, alert = weight_alert()
    when = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
    action = make_action(
        "ack", alert_id=alert.alert_id, pathway_id="heart-failure", coordinator="coord-7", at=when
    )
    parsed = parse_action(action_value(action))
    assert parsed == action
    assert parsed.closes
    closed = apply_action(state, parsed)  # type: ignore[arg-type]
    assert closed.open_alerts == {}
    note = make_action(
        "note",
        alert_id=alert.alert_id,
        pathway_id="heart-failure",
        coordinator="coord-7",
        at=when,
        note="Called, follow-up booked.",
    )
    assert apply_action(state, note).open_alerts == state.open_alerts  # type: ignore[union-attr,arg-type]


GOOD_ACTION = {
    "format": 1,
    "action": "dismiss",
    "alert_id": "5f0c4c1e-2b7a-5d3e-8f10-0a1b2c3d4e5f",
    "pathway_id": "copd",
    "coordinator": "coord-7",
    "organization": "Organization/care-coordination",
    "at": "2025-03-04T09:30:00+01:00",
    "note": "Known artefact.",
}


@pytest.mark.parametrize(
    ("value", "fields"),
    [
        (b"{not json", "value is not JSON"),
        (b"[1, 2]", "not a JSON object"),
        ({**GOOD_ACTION, "action": "delete"}, "action: literal_error"),
        ({**GOOD_ACTION, "alert_id": "1990000000001"}, "alert_id: string_pattern_mismatch"),
        ({**GOOD_ACTION, "at": "2025-03-04T09:30:00"}, "at: timezone_aware"),
        ({**GOOD_ACTION, "action": "note", "note": None}, "a note action"),
        ({**GOOD_ACTION, "patient": "1990000000001"}, "patient: extra_forbidden"),
        ({k: v for k, v in GOOD_ACTION.items() if k != "coordinator"}, "coordinator: missing"),
    ],
)
def test_bad_actions_are_rejected_without_values(value: object, fields: str) -> None:
    with pytest.raises(RejectedInputError) as caught:
        parse_action(value)  # type: ignore[arg-type]
    assert caught.value.code == "invalid-action"
    assert fields in caught.value.detail or fields in str(caught.value)
    assert "1990000000001" not in str(caught.value)


def test_good_action_from_text() -> None:
    parsed = parse_action(json.dumps(GOOD_ACTION))
    assert parsed.action == "dismiss"
    assert parsed.closes
    assert parsed.at.utcoffset() is not None
