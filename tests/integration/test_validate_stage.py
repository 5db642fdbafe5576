"""The validate stage in a real worker process against the real broker."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from caremesh import envelope
from caremesh.envelope import Envelope
from tests.support.kafka import Namespace, Proc, free_port, worker_ready

pytestmark = pytest.mark.kafka

INS = "urn:oid:1.2.250.1.213.1.4.8"


def _headers(msg_id: str, source: str = "hosp-a") -> list[tuple[str, bytes]]:
    env = Envelope(msg_id, f"urn:caremesh:source:{source}", "org.hl7.fhir.Bundle")
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]


def _patient(pid: str, ins: str) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": INS, "value": ins}],
        "gender": "female",
    }


def _obs(oid: str, pid: str, value: float) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2026-01-02T10:00:00+01:00",
        "valueQuantity": {
            "value": value,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    }


def test_bundles_are_split_keyed_by_patient_and_bad_input_is_dead_lettered(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    port = free_port()
    worker = spawn(
        "worker",
        ["worker", "--stage", "validate"],
        namespace.env(CAREMESH_WORKER__WEB_PORT=str(port)),
    )
    worker_ready(worker, port)

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:p1",
                "resource": _patient("p1", "2850512345678"),
                "request": {"method": "PUT", "url": "Patient/p1"},
            },
            *[
                {
                    "resource": _obs(f"o{i}", "p1", 70 + i),
                    "request": {"method": "POST", "url": "Observation"},
                }
                for i in range(5)
            ],
        ],
    }
    namespace.produce(
        "ingest.fhir.v1",
        [(b"m1", orjson.dumps(bundle), _headers("m1")), (b"bad", b"{not json", _headers("bad"))],
    )
    records = namespace.consume("clinical.fhir.v1", 6)
    assert len(records) == 6
    # A later message of the same source: its key comes from the mapping the stage learned.
    later_obs = _obs("o9", "p1", 99)
    namespace.produce("ingest.fhir.v1", [(b"m2", orjson.dumps(later_obs), _headers("m2"))])
    records = namespace.consume("clinical.fhir.v1", 7)
    assert len(records) == 7
    keys = {r.key() for r in records}
    assert keys == {b"2850512345678"}
    by_id = {orjson.loads(r.value())["id"]: r for r in records}
    assert set(by_id) == {"p1", "o0", "o1", "o2", "o3", "o4", "o9"}
    order = [
        orjson.loads(r.value())["id"] for r in records if r.partition() == records[0].partition()
    ]
    assert [i for i in order if i.startswith("o") and i != "o9"] == ["o0", "o1", "o2", "o3", "o4"]
    headers = envelope.headers_dict(by_id["o0"].headers())
    assert headers[envelope.H_TYPE] == "org.hl7.fhir.Observation"
    assert headers[envelope.H_FHIR_RELEASE] in {"R4B", "R5"}
    assert headers[envelope.H_CORRELATION_ID] == "m1"
    assert len({envelope.headers_dict(r.headers())[envelope.H_ID] for r in records}) == 7

    dead = namespace.consume("deadletter.v1", 1)
    assert len(dead) == 1
    dl = envelope.headers_dict(dead[0].headers())
    assert dead[0].value() == b"{not json"
    assert dl[envelope.H_ERROR_CODE] == "invalid-json"
    assert dl[envelope.H_ERROR_STAGE] == "validate"
    assert dl[envelope.H_ORIGIN_TOPIC] == namespace.topic("ingest.fhir.v1")
