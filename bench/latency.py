"""Latency from the HTTP ingest of a triggering Observation to its alert on pathway.alerts.v1,
under a steady background load, next to the raw Kafka produce-to-consume latency."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from confluent_kafka import Consumer, Producer

from bench.harness import Result
from caremesh import envelope, topics

INS = "urn:oid:1.2.250.1.213.1.4.8"
TOKEN = "bench-source-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _weight(patient: str, n: int, kg: float, when: datetime) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Observation",
            "id": f"w-{patient}-{n}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"identifier": {"system": INS, "value": patient}},
            "effectiveDateTime": when.isoformat(),
            "valueQuantity": {
                "value": kg,
                "unit": "kg",
                "system": "http://unitsofmeasure.org",
                "code": "kg",
            },
        }
    )


def _condition(patient: str) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Condition",
            "id": f"dx-{patient}",
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I50.0"}]},
            "subject": {"identifier": {"system": INS, "value": patient}},
        }
    )


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.99) - 1)]


def raw_kafka_latency(bootstrap: str, rate: float, count: int) -> list[float]:
    """Produce-to-consume latency of plain records at `rate` per second (seconds)."""
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    topics.ensure_topics(
        bootstrap,
        [topics.TopicSpec(topic, topics.KeyKind.EVENT_ID, "raw", 3600_000, ("bench",))],
        partitions=6,
        replication_factor=1,
    )
    consumer = Consumer(
        envelope.consumer_config(
            bootstrap,
            f"bench-{uuid.uuid4().hex}",
            **{"auto.offset.reset": "latest", "fetch.wait.max.ms": 10},
        )
    )
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(0.2)
    producer = Producer(envelope.producer_config(bootstrap, **{"linger.ms": 0}))
    latencies: list[float] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None and (msg.value() or b"").startswith(b"m:"):
                latencies.append(time.time() - float((msg.value() or b"m:0")[2:]))

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(50):  # warm-up: connections and fetch positions settle; not measured
        producer.produce(topic, key=uuid.uuid4().bytes, value=b"w:")
        producer.poll(0)
        time.sleep(1 / rate)
    for _ in range(count):
        producer.produce(topic, key=uuid.uuid4().bytes, value=b"m:" + repr(time.time()).encode())
        producer.poll(0)
        time.sleep(1 / rate)
    producer.flush(30)
    time.sleep(2)
    done.set()
    reader.join()
    consumer.close()
    return latencies


def alert_latency(bootstrap: str, load_rate: float = 200.0, probes: int = 40) -> list[float]:
    """HTTP ingest of a triggering Observation → its alert's CreateTime (seconds)."""
    prefix = f"benchlat{uuid.uuid4().hex[:6]}."
    topics.ensure_topics(
        bootstrap, topics.catalogue(), partitions=6, replication_factor=1, prefix=prefix
    )
    port, worker_port = _free_port(), _free_port()
    env = dict(
        os.environ,
        CAREMESH_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        CAREMESH_KAFKA__TOPIC_PREFIX=prefix,
        CAREMESH_KAFKA__PARTITIONS="6",
        CAREMESH_WORKER__APP_ID=prefix + "app",
        CAREMESH_WORKER__WEB_PORT=str(worker_port),
        CAREMESH_HTTP_INGEST__PORT=str(port),
        CAREMESH_LOG_LEVEL="WARNING",
        CAREMESH_SOURCES=json.dumps([{"id": "bench", "token": TOKEN}]),
        CAREMESH_PATHWAYS__COORDINATORS=json.dumps({"heart-failure": "Organization/org-a"}),
    )
    with tempfile.TemporaryDirectory() as tmp:
        logs = [Path(tmp, f"{n}.log").open("wb") for n in ("api", "worker")]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "caremesh.cli", "ingest-api"],
                env=env,
                stdout=logs[0],
                stderr=subprocess.STDOUT,
            ),
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "caremesh.cli",
                    "worker",
                    "--stage",
                    "validate",
                    "--stage",
                    "pathways",
                ],
                env=env,
                stdout=logs[1],
                stderr=subprocess.STDOUT,
            ),
        ]
        try:
            _wait_ready(f"http://127.0.0.1:{worker_port}/health", f"http://127.0.0.1:{port}/health")
            return asyncio.run(
                _probe(f"http://127.0.0.1:{port}", bootstrap, prefix, load_rate, probes)
            )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(60)


def _wait_ready(*urls: str) -> None:
    deadline = time.monotonic() + 120
    for url in urls:
        while time.monotonic() < deadline:
            try:
                r = httpx.get(url, timeout=2)
                if r.status_code == 200 and r.json().get("ready", True):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)


async def _probe(
    base: str, bootstrap: str, prefix: str, load_rate: float, probes: int
) -> list[float]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}
    now = datetime.now(UTC)
    patients = [f"29901759{n:05d}" for n in range(probes)]
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        for p in patients:  # enrol and take a first weight
            await client.post("/fhir/Condition", content=_condition(p))
            await client.post(
                "/fhir/Observation", content=_weight(p, 0, 80.0, now - timedelta(hours=30))
            )
        await asyncio.sleep(5)
        stop = asyncio.Event()

        async def background() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                other = f"29901758{n % 5000:05d}"  # not enrolled: load without alerts
                await client.post("/fhir/Observation", content=_weight(other, n, 70.0, now))
                await asyncio.sleep(1 / load_rate)

        loads = [asyncio.create_task(background()) for _ in range(1)]
        sent: dict[bytes, float] = {}
        for p in patients:
            sent[p.encode()] = time.time()
            r = await client.post("/fhir/Observation", content=_weight(p, 1, 83.0, now))
            assert r.status_code == 202
            await asyncio.sleep(0.25)
        await asyncio.sleep(5)
        stop.set()
        await asyncio.gather(*loads)
    consumer = Consumer(envelope.consumer_config(bootstrap, f"bench-{uuid.uuid4().hex}"))
    consumer.subscribe([prefix + topics.PATHWAY_ALERTS])
    latencies: list[float] = []
    deadline = time.monotonic() + 30
    while len(latencies) < len(patients) and time.monotonic() < deadline:
        for msg in consumer.consume(100, 0.5):
            if msg.error() is None and msg.key() in sent:
                latencies.append(msg.timestamp()[1] / 1000 - sent.pop(msg.key()))
    consumer.close()
    return latencies


def latency_result(bootstrap: str) -> list[Result]:
    """p50 and p99 of ingest → alert vs the raw Kafka round trip (target p99 <= 10x, <= 250 ms)."""
    raw = raw_kafka_latency(bootstrap, rate=200.0, count=400)
    alerts = alert_latency(bootstrap)
    raw50, raw99 = _percentiles(raw)
    a50, a99 = _percentiles(alerts)
    return [
        Result(
            "latency p50: HTTP ingest → alert vs raw Kafka",
            a50 * 1000,
            raw50 * 1000,
            "ms",
            a50 / raw50 if raw50 else 0.0,
            "(reported)",
            True,
        ),
        Result(
            "latency p99: HTTP ingest → alert vs raw Kafka",
            a99 * 1000,
            raw99 * 1000,
            "ms",
            a99 / raw99 if raw99 else 0.0,
            "<= 10x and <= 250 ms",
            a99 <= 0.25 and (raw99 == 0 or a99 / raw99 <= 10),
            notes=f"{len(alerts)} alerts under 200 resources/s",
        ),
    ]
