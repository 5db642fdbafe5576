"""Resolved transaction Bundles and strict validation, through the real HTTP ingest API, the real
MLLP listener and a real validate worker on the real broker.

- a Synthea-style transaction Bundle (urn:uuid fullUrls, no ids, entries referencing each other)
  becomes clinical records whose ids are set and whose references all name records of the
  same output;
- what a strict FHIR server refuses (a status outside its value set, a repeated key, a batch of
  100,000 empty entries, a urn:oid that is no OID, a dangling urn:uuid) gets 4xx with an
  OperationOutcome naming the element, never the value, and nothing is written; the same bytes
  reaching ingest.fhir.v1 by another channel are dead-lettered;
- an ADT without a PID segment gets AR, with the ERR segment of its HL7 version.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from caremesh import envelope
from caremesh.envelope import Envelope
from tests.support.kafka import Namespace, Proc, free_port, worker_ready

pytestmark = pytest.mark.kafka

TOKEN = "synthetic-token-for-tests-only"
INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
INS = "29901751000042"
FAMILY = "Synthverlaine"


def _uuid(n: int) -> str:
    return str(uuid.UUID(int=0x6F0E1B2A_0000_4000_8000_000000000000 + n))


def synthea_bundle() -> dict[str, Any]:
    """One patient, two encounters, observations and a condition, as generators write them."""
    patient_url = f"urn:uuid:{_uuid(1)}"
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient_url,
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": INS_SYSTEM, "value": INS}],
                "name": [{"family": FAMILY, "given": ["Synthia"]}],
                "gender": "female",
                "birthDate": "1950-04-02",
            },
            "request": {"method": "POST", "url": "Patient"},
        }
    ]
    for e in range(2):
        encounter_url = f"urn:uuid:{_uuid(10 + e)}"
        entries.append(
            {
                "fullUrl": encounter_url,
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                        "code": "AMB",
                    },
                    "subject": {"reference": patient_url, "display": FAMILY},
                },
                "request": {"method": "POST", "url": "Encounter"},
            }
        )
        for o in range(3):
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{_uuid(100 + 10 * e + o)}",
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                        "subject": {"reference": patient_url},
                        "encounter": {"reference": encounter_url},
                        "valueQuantity": {"value": 70 + o, "unit": "kg"},
                    },
                    "request": {"method": "POST", "url": "Observation"},
                }
            )
    entries.append(
        {
            "resource": {
                "resourceType": "Condition",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {"text": "heart failure"},
                "subject": {"reference": patient_url},
                "encounter": {"reference": f"urn:uuid:{_uuid(11)}"},
                "evidence": [{"detail": [{"reference": f"urn:uuid:{_uuid(110)}"}]}],
            },
            "request": {"method": "POST", "url": "Condition"},
        }
    )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [v for k, v in node.items() if k == "reference" and isinstance(v, str)]
        return out + [r for v in node.values() for r in _references(v)]
    if isinstance(node, list):
        return [r for v in node for r in _references(v)]
    return []


OBS = '{"resourceType":"Observation","code":{"text":"weight"},'
HOSTILE: list[tuple[str, str, bytes, str, str]] = [
    # (name, path, body, error code, element)
    (
        "status outside its value set",
        "/fhir/Observation",
        (OBS + '"status":"not-a-status"}').encode(),
        "invalid-code",
        "Observation.status",
    ),
    (
        "repeated key",
        "/fhir/Observation",
        (OBS + '"status":"final","status":"amended"}').encode(),
        "duplicate-key",
        "Observation.status",
    ),
    (
        "100,000 empty entries",
        "/fhir",
        orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": [{}] * 100_000}),
        "too-many-entries",
        "Bundle.entry",
    ),
    (
        "urn:oid that is no OID",
        "/fhir/Patient",
        orjson.dumps(
            {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:oid:SYNTHNOTANOID", "value": "1"}],
            }
        ),
        "invalid-oid",
        "Patient.identifier[0].system",
    ),
    (
        "dangling urn:uuid",
        "/fhir",
        orjson.dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": orjson.loads(
                            OBS
                            + f'"status":"final","subject":{{"reference":"urn:uuid:{_uuid(9)}"}}}}'
                        ),
                        "request": {"method": "POST", "url": "Observation"},
                    }
                ],
            }
        ),
        "unresolved-reference",
        "Bundle.entry[0].resource.subject.reference",
    ),
]


def _mllp(port: int, message: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"\x0b" + message + b"\x1c\x0d")
        data = b""
        while not data.endswith(b"\x1c\x0d"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the MLLP listener did not start")


def _headers(msg_id: str) -> list[tuple[str, bytes]]:
    env = Envelope(msg_id, "urn:caremesh:source:hosp-a", "org.hl7.fhir.Bundle")
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]


def test_transaction_bundles_resolve_and_strict_refusals_at_every_door(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    http_port, mllp_port, worker_port = free_port(), free_port(), free_port()
    # Its own status port too: the default one may be taken by another listener on this host.
    status_port = free_port()
    env = namespace.env(
        CAREMESH_SOURCES=json.dumps([{"id": "hosp-a", "token": TOKEN}, {"id": "SYNTH-HOSP"}]),
        CAREMESH_HTTP_INGEST__PORT=str(http_port),
        CAREMESH_MLLP__PORT=str(mllp_port),
        CAREMESH_MLLP__METRICS_PORT=str(status_port),
        CAREMESH_WORKER__WEB_PORT=str(worker_port),
    )
    procs = [
        spawn("ingest-api", ["ingest-api"], env, wait_http=f"http://127.0.0.1:{http_port}/health"),
        spawn("mllp", ["mllp"], env),
    ]
    worker = spawn("worker", ["worker", "--stage", "validate"], env)
    procs.append(worker)
    worker_ready(worker, worker_port)
    _wait_for_port(mllp_port)
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}
    client = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", headers=auth, timeout=60)

    # What a strict server refuses is refused at the door, naming the element only.
    for name, path, body, code, element in HOSTILE:
        response = client.post(path, content=body)
        assert 400 <= response.status_code < 500, (name, response.status_code)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome", name
        issues = outcome["issue"]
        assert issues[0]["details"]["coding"][0]["code"] == code, name
        assert issues[0]["expression"] == [element], name
        for secret in ("not-a-status", "amended", "SYNTHNOTANOID", _uuid(9)):
            assert secret not in response.text, name

    # A Synthea-style transaction becomes records whose references all resolve.
    bundle = synthea_bundle()
    response = client.post("/fhir", content=orjson.dumps(bundle))
    assert response.status_code == 202, response.text
    assert response.json()["resources"] == len(bundle["entry"])

    # The same hostile bytes sent by another channel are dead-lettered by the validate stage.
    namespace.produce(
        "ingest.fhir.v1",
        [
            (f"bad-{n}".encode(), body, _headers(f"bad-{n}"))
            for n, (*_, body, _c, _e) in enumerate(HOSTILE)
        ],
    )

    # An ADT without a PID can never become FHIR: AR, ERR as its version writes it.
    adt = (
        "MSH|^~\\&|SYNTH-ADT|SYNTH-HOSP|CAREMESH|TERRITORY|20260102100000||ADT^A01|NOPID-1|P|{v}\r"
        "EVN|A01|20260102100000\rPV1|1|I|CARDIO^101^1\r"
    )
    ack_25 = _mllp(mllp_port, adt.format(v="2.5").encode())
    assert b"MSA|AR|NOPID-1" in ack_25
    assert b"ERR|||100^Segment sequence error^HL70357|E||||missing-segment" in ack_25
    ack_23 = _mllp(mllp_port, adt.format(v="2.3").encode())
    assert b"MSA|AR|NOPID-1" in ack_23
    assert b"\rERR|^^^100&Segment sequence error&HL70357\r" in ack_23

    records = namespace.consume("clinical.fhir.v1", len(bundle["entry"]), timeout=120)
    assert len(records) == len(bundle["entry"])
    resources = [orjson.loads(record.value()) for record in records]
    ids = {f"{r['resourceType']}/{r['id']}" for r in resources}
    assert len(ids) == len(resources), "every record has its own id"
    references = [ref for r in resources for ref in _references(r)]
    assert len(references) == 2 + 6 * 2 + 3
    assert all(ref in ids for ref in references), "every reference names a record of the output"
    assert f"Patient/{_uuid(1)}" in ids
    assert {record.key() for record in records} == {INS.encode()}

    dead = namespace.consume("deadletter.v1", len(HOSTILE), timeout=60)
    codes = {envelope.headers_dict(d.headers())[envelope.H_ERROR_CODE] for d in dead}
    assert codes == {code for _n, _p, _b, code, _e in HOSTILE}
    # Nothing refused at the door reached the ingest topic: only the Bundle and the five
    # records produced above.
    ingest = namespace.consume_all("ingest.fhir.v1", settle=2, timeout=30)
    assert len(ingest) == 1 + len(HOSTILE)

    for proc in procs:
        text = proc.log()
        for secret in (FAMILY, INS, "SYNTHNOTANOID", TOKEN):
            assert secret not in text, f"{secret!r} found in the {proc.name} log"
