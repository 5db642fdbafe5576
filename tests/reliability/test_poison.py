"""Poison and hostile input interleaved with valid resources (4): every bad input is refused at
the edge (4xx, HL7 AR/AE, nothing written) or ends in deadletter.v1 with a reason; no valid
resource is lost; no partition stalls; the worker's memory stays bounded."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from caremesh import envelope
from caremesh.connectors.mllp_framing import END, frame
from caremesh.envelope import Envelope
from tests.reliability.pipeline import (
    MASTER_KEY,
    STUDIES,
    TOKEN,
    observation,
    start_ingest_api,
    start_worker,
)
from tests.reliability.support import header, read_all, rss_kib, size, wait_for
from tests.support.kafka import Namespace, Proc, free_port
from tests.unit.connectors.connectors_synth import hl7

pytestmark = [pytest.mark.kafka, pytest.mark.reliability]

FAULT_MARKER = "caremesh-test-fault-5e1d"
PATIENTS = 40
MAX_BODY = 64 * 1024


def _headers(msg_id: str, rtype: str = "Observation") -> list[tuple[str, bytes]]:
    env = Envelope(msg_id, "urn:caremesh:source:hosp-r", envelope.fhir_event_type(rtype))
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]


def _bad_fhir(r: int) -> dict[str, bytes]:
    """Hostile ingest.fhir.v1 values (as a misbehaving importer would write them), by kind."""
    invalid = observation(100_000 + r, 1)
    del invalid["status"]
    invalid["valueQuantity"] = {"value": "not-a-number"}
    oversize = observation(200_000 + r, 1)
    oversize["bogusElement"] = "x" * (3 * 1024 * 1024)
    return {
        "bad-json": b'{"resourceType": "Observation", "id": ',
        "not-an-object": b"[1, 2, 3]",
        "binary": bytes(range(256)) * 4,
        "empty": b"",
        "wrong-resource-type": orjson.dumps({"resourceType": "NotAResource", "id": f"x{r}"}),
        "invalid-fhir": orjson.dumps(invalid),
        "oversize-invalid": orjson.dumps(oversize),
    }


def _stage_fault(r: int) -> tuple[bytes, dict[str, object]]:
    """A valid resource that makes the research stage raise (test-only fault marker)."""
    resource = observation(300_000 + r, 0)
    patient = f"2990179{r:06d}"
    resource["subject"] = {
        "identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": patient}
    }
    resource["note"] = [{"text": FAULT_MARKER}]
    return patient.encode(), resource


async def _mllp_send(port: int, messages: list[bytes]) -> list[str]:
    """Send frames on one connection; the MSA-1 code of each ACK (or 'closed')."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    codes = []
    try:
        for message in messages:
            writer.write(frame(message))
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.readuntil(END), 30)
            except (asyncio.IncompleteReadError, ConnectionError):
                codes.append("closed")
                break
            msa = next(s for s in data[1:-2].split(b"\r") if s.startswith(b"MSA"))
            codes.append(msa.decode().split("|")[1])
    finally:
        writer.close()
    return codes


def _lag(kafka: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": group, "log_level": 0})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in parts]
        total = 0
        for tp in consumer.committed(tps, timeout=10):
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            total += high - max(tp.offset, 0)
        return total
    finally:
        consumer.close()


def test_poison_and_hostile_input_end_in_deadletter_and_nothing_valid_is_lost(
    namespace: Namespace, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    n = size(1_000, 10_000, "CAREMESH_RELIABILITY_POISON_N")
    repeats = 3
    ns = namespace
    app_id = ns.prefix + "app"
    api, url = start_ingest_api(spawn, ns, CAREMESH_HTTP_INGEST__MAX_BODY_BYTES=str(MAX_BODY))
    mllp_port = free_port()
    spawn(
        "mllp",
        ["mllp"],
        ns.env(CAREMESH_MLLP__PORT=str(mllp_port), CAREMESH_MLLP__MAX_MESSAGE_BYTES="65536"),
    )
    worker = start_worker(
        spawn,
        ns,
        ["hl7v2", "validate", "research"],
        tmp_path / "worker",
        CAREMESH_STUDIES=STUDIES,
        CAREMESH_PSEUDONYM__MASTER_KEY=MASTER_KEY,
        CAREMESH_WORKER__FAULT_MARKER=FAULT_MARKER,
    )

    # Interleave: valid resources with hostile records scattered among them.
    rng = random.Random(9)
    fhir_records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
    bad_keys: set[bytes] = set()
    fault_keys: set[bytes] = set()
    for i in range(n):
        fhir_records.append(
            (f"m-{i}".encode(), orjson.dumps(observation(i, i % PATIENTS)), _headers(f"m-{i}"))
        )
    for r in range(repeats):
        for kind, value in _bad_fhir(r).items():
            key = f"bad-{kind}-{r}".encode()
            bad_keys.add(key)
            fhir_records.insert(
                rng.randrange(len(fhir_records)), (key, value, _headers(key.decode()))
            )
        patient, resource = _stage_fault(r)
        fault_keys.add(patient)
        fhir_records.insert(
            rng.randrange(len(fhir_records)),
            (f"fault-{r}".encode(), orjson.dumps(resource), _headers(f"fault-{r}")),
        )
    half = len(fhir_records) // 2
    ns.produce("ingest.fhir.v1", fhir_records[:half])
    wait_for(
        lambda: len(read_all(ns.kafka, ns.topic("clinical.fhir.v1"), settle=1)) >= n // 3,
        180,
        "the first part validated",
        2,
    )
    rss_before = rss_kib(worker.process.pid)

    # Hostile HL7 v2: garbage written straight to the topic, and garbage over MLLP.
    hl7_bad: dict[bytes, bytes] = {}
    for r in range(repeats):
        hl7_bad[f"badhl7-{r}-a".encode()] = b"MSH|garbage\rPID|||\r"
        hl7_bad[f"badhl7-{r}-b".encode()] = bytes(range(1, 200))
    ns.produce(
        "ingest.hl7v2.v1",
        [(k, v, [(envelope.H_ID, uuid.uuid4().hex.encode())]) for k, v in hl7_bad.items()],
    )
    bad_keys |= set(hl7_bad)
    broken_after_msh = [
        hl7("ORU^R01", f"BADORU{r}").replace(b"PID|1||", b"PID|1||\x00\xff^^^") + b"OBX|1|NM|||"
        for r in range(repeats)
    ]
    garbage = [b"\x00\x01 not hl7 at all " * 10, b"MSH", b"Z" * 70_000]
    codes = asyncio.run(_mllp_send(mllp_port, [*broken_after_msh, *garbage]))
    accepted_over_mllp = {
        f"BADORU{r}".encode() for r, code in enumerate(codes[:repeats]) if code == "AA"
    }
    assert all(code in {"AR", "AE", "closed"} for code in codes[repeats:]), codes

    # Hostile HTTP: refused at the edge with a 4xx, nothing written.
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}
    http_bad = {
        "bad-json": ("/fhir/Observation", b'{"resourceType": '),
        "wrong-resource-type": ("/fhir/Patient", orjson.dumps(observation(1, 1))),
        "oversize": ("/fhir/Observation", b'{"a": "' + b"x" * (MAX_BODY * 20) + b'"}'),
        "invalid-fhir": ("/fhir/Observation", orjson.dumps({"resourceType": "Observation"})),
        "not-fhir": ("/fhir", b'{"resourceType": "Bundle", "type": "searchset"}'),
    }
    http_status = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        for kind, (path, body) in http_bad.items():
            http_status[kind] = client.post(path, content=body, headers=auth).status_code
    assert all(400 <= s < 500 for s in http_status.values()), http_status

    ns.produce("ingest.fhir.v1", fhir_records[half:])

    # Dead letters of the ingest stages keep the original key; those of the Faust stages (the
    # injected research fault) are keyed by the patient's data key id (`dk1.`, crypto-shredded
    # dead letters, caremesh.tables.deadletters), never by the patient key.
    expected_dl = bad_keys | accepted_over_mllp
    dead: list = []

    def stage_faults(msgs: list) -> set[bytes]:
        return {m.key() for m in msgs if header(m, envelope.H_ERROR_CODE) == "stage-error"}

    def all_dead_lettered() -> bool:
        nonlocal dead
        dead = read_all(ns.kafka, ns.topic("deadletter.v1"), settle=2)
        keys = {m.key() for m in dead}
        return expected_dl <= keys and len(stage_faults(dead)) >= len(fault_keys)

    wait_for(all_dead_lettered, 180, "every hostile record in deadletter.v1", 2)
    clinical: list = []

    def all_valid() -> bool:
        nonlocal clinical
        clinical = read_all(ns.kafka, ns.topic("clinical.fhir.v1"), settle=2)
        return len({orjson.loads(m.value())["id"] for m in clinical}) >= n + repeats

    wait_for(all_valid, 180, "every valid resource on clinical.fhir.v1", 2)
    research = read_all(ns.kafka, ns.topic("research.study-b.v1"), settle=3)
    lags: dict[str, int] = {}

    def drained() -> bool:
        lags["validate"] = _lag(ns.kafka, f"{app_id}-validate", ns.topic("ingest.fhir.v1"))
        lags["hl7v2"] = _lag(ns.kafka, f"{app_id}-hl7v2", ns.topic("ingest.hl7v2.v1"))
        lags["research"] = _lag(ns.kafka, f"{app_id}-research", ns.topic("clinical.fhir.v1"))
        return not any(lags.values())

    wait_for(drained, 90, "consumer lag back to 0 on every partition", 2)
    rss_after = rss_kib(worker.process.pid)

    valid_ids = {f"obs-{i}" for i in range(n)}
    clinical_ids = {orjson.loads(m.value())["id"] for m in clinical}
    dead_keys = {m.key() for m in dead}
    without_reason = [
        m
        for m in dead
        if not header(m, envelope.H_ERROR_CODE) or not header(m, envelope.H_ERROR_REASON)
    ]
    codes_seen = sorted({header(m, envelope.H_ERROR_CODE) or "" for m in dead})
    research_ids = {header(m, envelope.H_ID) for m in research}
    print(
        f"\n[poison] valid={n} hostile-to-kafka={len(bad_keys) + len(fault_keys)} "
        f"mllp-acks={codes} http={http_status} dead-letters={len(dead)} "
        f"dead-letter-codes={codes_seen} valid-lost={len(valid_ids - clinical_ids)} "
        f"research-records={len(research_ids)} lag={lags} "
        f"worker-rss-kib before={rss_before} after={rss_after} growth={rss_after - rss_before}"
    )
    assert expected_dl <= dead_keys  # 100% of what reached Kafka
    assert len(stage_faults(dead)) == len(fault_keys)  # one per faulty patient ...
    assert not fault_keys & dead_keys  # ... and no patient key in clear
    assert without_reason == []
    assert valid_ids <= clinical_ids  # 0 valid lost
    assert not {f"m-{i}".encode() for i in range(n)} & dead_keys
    assert len(research_ids) >= n  # valid ones pass the raising stage too
    assert rss_after - rss_before < 200 * 1024  # bounded growth (KiB)
    assert api.process.poll() is None
    assert worker.process.poll() is None
