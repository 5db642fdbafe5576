"""The pathways stage's handlers over plain records: alerts raised once, consent-gated, audited,
state written only when it changes, coordinator actions applied (no broker)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from caremesh.consent.policy import consent_policy
from caremesh.errors import RejectedInputError
from caremesh.kafka.io import Output
from caremesh.metrics import Metrics
from caremesh.pathways import action_value, load_shipped_pathways, make_action
from caremesh.settings import Settings
from caremesh.streams import pathways as stage
from caremesh.streams.record import Record
from caremesh.tables.state import PartitionState
from caremesh.topics import PATHWAY_ACTIONS
from tests.unit.consent.consent_builders import provision as consent_provision
from tests.unit.consent.consent_builders import r4_consent
from tests.unit.pathways.pathway_fixtures import ICD10, condition, observation
from tests.unit.streams.stage_support import FixedConsents, clinical

PATIENT = "2990175123456"
ALERTS = "t.pathway.alerts.v1"
NOW = datetime.now(UTC)


def _context(consents: list[dict[str, Any]] | None = None) -> stage.PathwaysContext:
    settings = Settings()
    return stage.PathwaysContext(
        pathways=load_shipped_pathways({"copd": "Organization/org-a"}),
        table=PartitionState(settings.kafka, "t.pathways-state"),
        gate=FixedConsents(stage.STAGE, {PATIENT: consents or []}),
        policy=consent_policy(settings.consent),
        alerts_topic=ALERTS,
        metrics=Metrics(),
    )


def _feed(ctx: stage.PathwaysContext, resources: list[dict[str, Any]]) -> list[Output]:
    outputs: list[Output] = []
    for n, resource in enumerate(resources):
        at = (NOW - timedelta(minutes=len(resources) - n)).timestamp()
        outputs += stage.handle(ctx, clinical(PATIENT, resource, at=at, offset=n))
    return outputs


def _copd_and_low_spo2() -> list[dict[str, Any]]:
    return [
        condition("copd-dx", ICD10, "J44.1", when=NOW - timedelta(days=30)),
        observation("spo2-1", "59408-5", 88, "%", when=NOW - timedelta(hours=4)),
        observation("spo2-2", "59408-5", 87, "%", when=NOW - timedelta(hours=3)),
    ]


def _alerts(outputs: list[Output]) -> list[dict[str, Any]]:
    return [orjson.loads(o.value or b"") for o in outputs if o.topic == ALERTS]


def test_two_low_spo2_readings_raise_one_audited_alert_to_the_coordinator() -> None:
    ctx = _context()
    outputs = _feed(ctx, _copd_and_low_spo2())
    alerts = _alerts(outputs)
    assert len(alerts) == 1
    assert alerts[0]["resourceType"] == "Communication"
    assert alerts[0]["recipient"][0]["reference"] == "Organization/org-a"
    assert len(ctx.gate.audits) == 1  # type: ignore[attr-defined]
    # a further low reading while the alert is open raises nothing new
    again = _feed(ctx, [observation("spo2-3", "59408-5", 86, "%", when=NOW - timedelta(hours=2))])
    assert _alerts(again) == []


def test_a_consent_that_denies_care_sharing_stops_the_alert_but_keeps_its_audit() -> None:
    deny = r4_consent("c-deny", consent_provision("deny", purposes=["TREAT"]))
    ctx = _context([deny])
    outputs = _feed(ctx, _copd_and_low_spo2())
    assert _alerts(outputs) == []
    audits = ctx.gate.audits  # type: ignore[attr-defined]
    assert len(audits) == 1
    assert orjson.loads(audits[0].value)["resourceType"] == "AuditEvent"


def test_a_record_no_pathway_cares_about_writes_no_state() -> None:
    ctx = _context()
    other = observation("hr-1", "8867-4", 70, "/min", when=NOW - timedelta(hours=1))
    assert _feed(ctx, [other]) == []


def _ack(alert_id: str) -> bytes:
    action = make_action(
        "ack", alert_id=alert_id, pathway_id="copd", coordinator="coord-1", at=NOW, note="called"
    )
    return action_value(action)


def test_a_coordinators_ack_lets_the_next_episode_alert_again() -> None:
    ctx = _context()
    alert = _alerts(_feed(ctx, _copd_and_low_spo2()))[0]
    value = _ack(alert["id"])
    closed = stage.handle(
        ctx, Record(topic=PATHWAY_ACTIONS, key=PATIENT.encode(), value=value, time=NOW.timestamp())
    )
    assert [o.state for o in closed] == [True]
    later = [
        observation("spo2-4", "59408-5", 85, "%", when=NOW - timedelta(minutes=30)),
        observation("spo2-5", "59408-5", 84, "%", when=NOW - timedelta(minutes=20)),
    ]
    again = _alerts(_feed(ctx, later))
    assert len(again) == 1
    assert again[0]["id"] != alert["id"]


def test_an_action_for_a_patient_without_state_changes_nothing() -> None:
    ctx = _context()
    rec = Record(topic=PATHWAY_ACTIONS, key=b"other", value=_ack(str(uuid.UUID(int=1))))
    assert stage.handle(ctx, rec) == []


def test_a_malformed_action_is_rejected_for_the_dead_letters() -> None:
    with pytest.raises(RejectedInputError):
        stage.handle(_context(), Record(topic=PATHWAY_ACTIONS, key=b"p", value=b"{"))
