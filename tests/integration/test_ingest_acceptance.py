"""Ingest acceptance, through the real HTTP and MLLP servers and a real worker on the real broker:
every resource exactly once with the right patient key, repeats add nothing, bad input is refused
or dead-lettered without stopping valid traffic, and no synthetic identifier reaches a log."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.kafka import Namespace, Proc, free_port, worker_ready

pytestmark = pytest.mark.kafka

INS = "urn:oid:1.2.250.1.213.1.4.8"
DATA = Path(__file__).parents[1] / "data" / "hl7"
TOKEN = "synthetic-token-for-tests-only"
FAMILY = "Synthbeaumont"


def _ins(p: int) -> str:
    return f"29901751{p:05d}"


def _obs(p: int, n: int) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"p{p}-o{n}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"identifier": {"system": INS, "value": _ins(p)}, "display": FAMILY},
        "effectiveDateTime": f"2026-01-01T10:{n % 60:02d}:00+01:00",
        "valueQuantity": {
            "value": 60 + n,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    }


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


def test_http_and_mllp_ingest_end_to_end(namespace: Namespace, spawn: Callable[..., Proc]) -> None:
    http_port, mllp_port, worker_port = free_port(), free_port(), free_port()
    env = namespace.env(
        CAREMESH_SOURCES=json.dumps([{"id": "hosp-a", "token": TOKEN}, {"id": "SYNTH-HOSP"}]),
        CAREMESH_HTTP_INGEST__PORT=str(http_port),
        CAREMESH_MLLP__PORT=str(mllp_port),
        CAREMESH_WORKER__WEB_PORT=str(worker_port),
        CAREMESH_LOG_LEVEL="DEBUG",
    )
    procs = [
        spawn("ingest-api", ["ingest-api"], env, wait_http=f"http://127.0.0.1:{http_port}/health"),
        spawn("mllp", ["mllp"], env),
    ]
    worker = spawn("worker", ["worker", "--stage", "hl7v2", "--stage", "validate"], env)
    procs.append(worker)
    worker_ready(worker, worker_port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", mllp_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)

    base = f"http://127.0.0.1:{http_port}"
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}
    client = httpx.Client(base_url=base, headers=auth, timeout=30)
    # 1,000 resources: 25 patients, each with one Bundle of 20 and 20 single resources.
    sent: Counter[str] = Counter()
    for p in range(25):
        entries = [
            {"resource": _obs(p, n), "request": {"method": "POST", "url": "Observation"}}
            for n in range(20)
        ]
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": entries}
        r = client.post(
            "/fhir", content=orjson.dumps(bundle), headers={"Idempotency-Key": f"b-{p}"}
        )
        assert r.status_code == 202, r.text
        for n in range(20, 40):
            r = client.post(
                "/fhir/Observation",
                content=orjson.dumps(_obs(p, n)),
                headers={"Idempotency-Key": f"s-{p}-{n}"},
            )
            assert r.status_code == 202, r.text
        sent[_ins(p)] += 40
        # Bad input in between: each refused with an OperationOutcome, nothing written.
        if p % 5 == 0:
            for body, status in (
                (b"{not json", 400),
                (b"", 400),
                (orjson.dumps({"resourceType": "Patient", "gender": 12}), 422),
            ):
                bad = client.post("/fhir/Patient", content=body)
                assert bad.status_code == status
                assert bad.json()["resourceType"] == "OperationOutcome"
                assert FAMILY not in bad.text

    # The same batch again, same Idempotency-Keys: accepted, and adds nothing downstream.
    for p in range(3):
        entries = [
            {"resource": _obs(p, n), "request": {"method": "POST", "url": "Observation"}}
            for n in range(20)
        ]
        r = client.post(
            "/fhir",
            content=orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries}),
            headers={"Idempotency-Key": f"b-{p}"},
        )
        assert r.status_code == 202

    # HL7 v2 over a TCP socket: ACK AA, then Patient, Encounter and Observation records.
    for name in ("adt_a01.hl7", "oru_r01.hl7"):
        ack = _mllp(mllp_port, (DATA / name).read_bytes())
        assert b"MSA|AA|" in ack
    assert b"MSA|AR|" in _mllp(mllp_port, b"PID|1||garbage")

    records = namespace.consume_all("clinical.fhir.v1", settle=6, timeout=180)
    http_records = [m for m in records if orjson.loads(m.value())["id"].startswith("p")]
    hl7_records = [m for m in records if not orjson.loads(m.value())["id"].startswith("p")]
    assert len(http_records) == 1000
    ids = Counter(orjson.loads(m.value())["id"] for m in http_records)
    assert max(ids.values()) == 1
    assert Counter(m.key().decode() for m in http_records) == sent
    by_patient: dict[str, list[int]] = {}
    for m in http_records:
        n = int(orjson.loads(m.value())["id"].split("-o")[1])
        if n < 20:  # the Bundle's entries keep their order
            by_patient.setdefault(m.key().decode(), []).append(n)
    assert all(v == sorted(v) for v in by_patient.values())
    hl7_types = Counter(orjson.loads(m.value())["resourceType"] for m in hl7_records)
    assert hl7_types["Patient"] >= 1
    assert hl7_types["Encounter"] >= 1
    assert hl7_types["Observation"] >= 1

    # No synthetic identifier, name or value reaches any process log.
    for proc in procs:
        text = proc.log()
        for secret in (FAMILY, _ins(3), "100000000000017", "SYNTHNOM", TOKEN):
            assert secret not in text, f"{secret!r} found in the {proc.name} log"
