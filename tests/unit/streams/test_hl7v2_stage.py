"""The hl7v2 stage's handler over plain records: an HL7 v2 message becomes one FHIR Bundle on
ingest.fhir.v1 with the raw message's id, key and partition; a message that is not HL7 v2 is
rejected for the dead letters (no broker)."""

from __future__ import annotations

import orjson
import pytest

from caremesh import envelope
from caremesh.errors import InvalidHl7Error
from caremesh.metrics import Metrics
from caremesh.streams import hl7v2 as stage
from caremesh.streams.record import Record
from caremesh.topics import INGEST_HL7V2
from tests.unit.fhir.test_hl7v2 import sample

INGEST = "t.ingest.fhir.v1"


def _raw(value: bytes, partition: int = 2) -> Record:
    env = envelope.Envelope("msg-1", "urn:caremesh:source:hosp-b", "org.caremesh.hl7v2")
    return Record(
        topic=INGEST_HL7V2,
        key=b"patient-key",
        value=value,
        headers=tuple(env.headers()),
        partition=partition,
    )


def test_an_adt_becomes_one_bundle_with_the_raw_messages_id_key_and_partition() -> None:
    ctx = stage.Hl7v2Context(ingest_topic=INGEST, metrics=Metrics())
    (out,) = stage.map_one(ctx, _raw(sample("adt_a01")))
    assert out.topic == INGEST
    assert out.key == b"patient-key"
    assert out.partition == 2
    bundle = orjson.loads(out.value or b"")
    assert bundle["resourceType"] == "Bundle"
    assert "Patient" in {e["resource"]["resourceType"] for e in bundle["entry"]}
    headers = envelope.headers_dict(out.headers)
    assert headers[envelope.H_ID] == "msg-1"
    assert headers[envelope.H_SOURCE] == "urn:caremesh:source:hosp-b"


def test_a_message_that_is_not_hl7v2_is_rejected() -> None:
    ctx = stage.Hl7v2Context(ingest_topic=INGEST, metrics=Metrics())
    with pytest.raises(InvalidHl7Error):
        stage.map_one(ctx, _raw(b"PID|1||123"))
