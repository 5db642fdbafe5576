"""The validate stage's handler over plain records: valid resources to clinical.fhir.v1 keyed by
patient, a message seen again adds nothing, a Patient's INS is learned for later records, an
invalid one is rejected for the dead letters without its content (no broker)."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from caremesh import envelope
from caremesh.errors import RejectedInputError
from caremesh.metrics import Metrics
from caremesh.settings import Settings
from caremesh.streams import validate as stage
from caremesh.streams.record import Record
from caremesh.tables.state import GlobalState, PartitionState
from caremesh.topics import INGEST_FHIR

INS = "urn:oid:1.2.250.1.213.1.4.8"
CLINICAL = "t.clinical.fhir.v1"


def _context() -> stage.ValidateContext:
    kafka = Settings().kafka
    return stage.ValidateContext(
        links=GlobalState(kafka, "t.links"),
        seen=PartitionState(kafka, "t.seen"),
        releases={},
        clinical_topic=CLINICAL,
        metrics=Metrics(),
        window_seconds=3600.0,
    )


def _ingest(resource: dict[str, Any], msg_id: str, source: str = "hosp-a") -> Record:
    env = envelope.Envelope(
        msg_id,
        f"urn:caremesh:source:{source}",
        envelope.fhir_event_type(str(resource["resourceType"])),
    )
    return Record(
        topic=INGEST_FHIR,
        key=msg_id.encode(),
        value=orjson.dumps(resource),
        headers=tuple(env.headers()),
    )


PATIENT = {
    "resourceType": "Patient",
    "id": "p-1",
    "identifier": [{"system": INS, "value": "2990175123456"}],
    "gender": "female",
}
OBSERVATION = {
    "resourceType": "Observation",
    "id": "o-1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "59408-5"}]},
    "subject": {"reference": "Patient/p-1"},
    "effectiveDateTime": "2026-12-01T10:00:00Z",
    "valueQuantity": {"value": 91, "unit": "%"},
}


def _clinical(outputs: list[Any]) -> list[Any]:
    return [o for o in outputs if o.topic == CLINICAL]


def test_a_patient_teaches_its_ins_and_a_later_observation_is_keyed_by_it() -> None:
    ctx = _context()
    first = stage.validate_one(ctx, _ingest(PATIENT, "m-1"))
    (patient,) = _clinical(first)
    assert patient.key == b"2990175123456"
    later = stage.validate_one(ctx, _ingest(OBSERVATION, "m-2"))
    (observation,) = _clinical(later)
    assert observation.key == b"2990175123456"  # the source id's INS, learned from the Patient
    assert orjson.loads(observation.value)["subject"] == {"reference": "Patient/p-1"}


def test_a_message_seen_again_adds_nothing() -> None:
    ctx = _context()
    assert _clinical(stage.validate_one(ctx, _ingest(OBSERVATION, "m-1")))
    assert stage.validate_one(ctx, _ingest(OBSERVATION, "m-1")) == []


def test_an_invalid_resource_is_rejected_naming_the_element_not_the_value() -> None:
    bad = {**OBSERVATION, "status": "not-a-status"}
    with pytest.raises(RejectedInputError) as caught:
        stage.validate_one(_context(), _ingest(bad, "m-1"))
    assert "status" in caught.value.detail
    assert "not-a-status" not in caught.value.detail


def test_seen_ids_older_than_the_window_are_forgotten_at_most_once_a_minute() -> None:
    ctx = _context()
    stage.validate_one(ctx, _ingest(OBSERVATION, "m-1"))
    now = time.time()
    stage.purge_seen(ctx, now + 30)  # within the minute since the last purge: nothing done
    assert stage.validate_one(ctx, _ingest(OBSERVATION, "m-1")) == []
    stage.purge_seen(ctx, now + 7200)  # past the window
    assert _clinical(stage.validate_one(ctx, _ingest(OBSERVATION, "m-1")))
