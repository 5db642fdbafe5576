"""HL7 v2 from the raw topic to clinical records: the hl7v2 and validate stages in one worker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from caremesh import envelope
from caremesh.envelope import Envelope
from tests.support.kafka import Namespace, Proc, free_port, worker_ready

pytestmark = pytest.mark.kafka

DATA = Path(__file__).parents[1] / "data" / "hl7"


def _headers(msg_id: str) -> list[tuple[str, bytes]]:
    env = Envelope(
        msg_id, "urn:caremesh:source:synth-hosp", "org.hl7.v2", content_type=envelope.HL7V2
    )
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]


def test_adt_and_oru_become_patient_encounter_and_observations(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    port = free_port()
    worker = spawn(
        "worker",
        ["worker", "--stage", "hl7v2", "--stage", "validate"],
        namespace.env(CAREMESH_WORKER__WEB_PORT=str(port)),
    )
    worker_ready(worker, port)
    a01 = (DATA / "adt_a01.hl7").read_bytes()
    oru = (DATA / "oru_r01.hl7").read_bytes()
    namespace.produce(
        "ingest.hl7v2.v1",
        [
            (b"SYNA01-0001", a01, _headers("a01")),
            (b"garbage", b"this is not HL7", _headers("garbage")),
        ],
    )
    first = namespace.consume_all("clinical.fhir.v1", settle=4)
    types = sorted(orjson.loads(m.value())["resourceType"] for m in first)
    assert "Patient" in types
    assert "Encounter" in types
    # The ADT carried an INS in PID-3: every record of the patient is keyed by it.
    assert {m.key() for m in first} == {b"100000000000017"}

    namespace.produce("ingest.hl7v2.v1", [(b"SYNORU", oru, _headers("oru"))])
    records = namespace.consume_all("clinical.fhir.v1", settle=4)
    observations = [
        orjson.loads(m.value())
        for m in records
        if orjson.loads(m.value())["resourceType"] == "Observation"
    ]
    assert observations
    assert all(o["code"]["coding"][0]["system"] == "http://loinc.org" for o in observations)

    mapped = namespace.consume("ingest.fhir.v1", 2)
    assert {envelope.headers_dict(m.headers())[envelope.H_ID] for m in mapped} == {"a01", "oru"}

    dead = namespace.consume("deadletter.v1", 1)
    assert len(dead) == 1
    reason = envelope.headers_dict(dead[0].headers())
    assert reason[envelope.H_ERROR_STAGE] == "hl7v2"
    assert dead[0].value() == b"this is not HL7"
