"""Delivery throughput: mode `transaction` as a ratio to mode `rest` on the same outbox corpus.

The corpus is what the share stage writes for a care-team organisation: per patient one golden
Patient and `observations` Observations in their recipient form (`caremesh.fhir.recipient_ids`).
It goes to an outbox topic of its own per mode; `FhirDelivery` (one organisation) delivers it to
an in-process HTTP endpoint on the loopback that answers 200 at once (so the figure is caremesh's
cost and the request count, not a FHIR server's). The rate is resources delivered per second,
from the first record read to the last one settled (AuditEvent acknowledged). Reported, no
target: how much a receiver's per-request cost changes it is the receiver's matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import orjson
import uvicorn
from confluent_kafka import Producer
from fastapi import FastAPI, Request
from fastapi.responses import Response

from bench.harness import Result, median_pair, ratio_result
from caremesh import envelope, topics
from caremesh.connectors.fhir_delivery import FhirDelivery
from caremesh.fhir.patient_key import INS_SYSTEM
from caremesh.fhir.recipient_ids import RecipientContext, for_recipients
from caremesh.kafka import admin as kafka_admin
from caremesh.kafka import config as kafka_config
from caremesh.kafka.io import AsyncProducer
from caremesh.metrics import Metrics
from caremesh.settings import DeliveryMode, OrganisationSettings, Settings

PARTITIONS = 3


def corpus(patients: int, observations: int) -> list[tuple[bytes, bytes, str]]:
    """(patient key, recipient-form resource, resource type) in outbox order."""
    out = []
    for p in range(patients):
        ins = f"1{p:012d}"
        ctx = RecipientContext("bench-hosp", ins, f"m{p}")
        patient = {
            "resourceType": "Patient",
            "id": str(p),
            "identifier": [{"system": INS_SYSTEM, "value": ins}],
            "name": [{"family": f"Synth{p}", "given": ["Bench"]}],
            "birthDate": "1950-04-02",
        }
        out.append((ins.encode(), orjson.dumps(for_recipients(patient, ctx)), "Patient"))
        for o in range(observations):
            observation = {
                "resourceType": "Observation",
                "id": f"o{p}-{o}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                "subject": {"reference": f"Patient/{p}"},
                "effectiveDateTime": "2026-01-02T10:00:00+01:00",
                "valueQuantity": {"value": 70 + o, "unit": "kg"},
            }
            value = orjson.dumps(for_recipients(observation, ctx))
            out.append((ins.encode(), value, "Observation"))
    return out


class _Endpoint:
    """Answers 200 to every request; counts resources received."""

    def __init__(self) -> None:
        self.resources = 0
        self.lock = threading.Lock()

    def app(self) -> FastAPI:
        app = FastAPI()

        async def count(request: Request) -> Response:
            body = orjson.loads(await request.body())
            n = len(body.get("entry") or []) if body.get("resourceType") == "Bundle" else 1
            with self.lock:
                self.resources += n
            return Response(b"{}", 200, media_type=envelope.FHIR_JSON)

        app.add_api_route("/fhir", count, methods=["POST"])
        app.add_api_route("/fhir/{path:path}", count, methods=["PUT", "POST"])
        return app


@contextlib.contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, str]]) -> None:
    producer = Producer(kafka_config.producer_config(bootstrap))
    for key, value, rtype in records:
        env = envelope.Envelope(
            str(uuid.uuid4()), "urn:caremesh:stage:share", envelope.fhir_event_type(rtype)
        )
        producer.produce(topic, key=key, value=value, headers=env.headers())
    producer.flush(60)


async def _deliver(settings: Settings, endpoint: _Endpoint, total: int) -> float:
    metrics = Metrics()
    producer = AsyncProducer(settings.kafka.bootstrap_servers)
    delivery = FhirDelivery(settings, producer, metrics, follow_registry=False)
    task = asyncio.create_task(delivery.run())
    try:
        while endpoint.resources == 0:
            await asyncio.sleep(0.005)
        started = time.monotonic()
        while endpoint.resources < total:
            await asyncio.sleep(0.005)
        return total / (time.monotonic() - started)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        producer.close(timeout=10)


def mode_rate(
    bootstrap: str, prefix: str, records: list[tuple[bytes, bytes, str]], mode: DeliveryMode
) -> float:
    """Resources/s delivered in `mode`, on topics of their own."""
    org = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
    kafka_admin.ensure_topics(
        bootstrap,
        topics.catalogue([org], []),
        partitions=PARTITIONS,
        replication_factor=1,
        prefix=prefix,
    )
    _produce(bootstrap, prefix + topics.outbox_topic(org), records)
    endpoint = _Endpoint()
    with _serve(endpoint.app()) as url:
        settings = Settings(
            organisations=[OrganisationSettings(id=org, fhir_endpoint=url, delivery_mode=mode)]
        )
        kafka = settings.kafka.model_copy(
            update={"bootstrap_servers": bootstrap, "topic_prefix": prefix}
        )
        settings = settings.model_copy(update={"kafka": kafka})
        return asyncio.run(_deliver(settings, endpoint, len(records)))


def results(
    bootstrap: str, prefix: str, patients: int, observations: int, repetitions: int
) -> list[Result]:
    """`transaction` vs `rest` on the same corpus (reported)."""
    records = corpus(patients, observations)
    pairs = []
    for _ in range(repetitions):
        rest = mode_rate(bootstrap, prefix, records, "rest")
        transaction = mode_rate(bootstrap, prefix, records, "transaction")
        pairs.append((transaction, rest))
    value, baseline = median_pair(pairs)
    per_rep = ", ".join(f"{t / r:.2f}" for t, r in pairs)
    return [
        ratio_result(
            "delivery: transaction vs rest",
            value,
            baseline,
            "resources/s",
            notes=f"{len(records)} resources ({patients} patients, a Patient and {observations} "
            f"Observations each), an endpoint that answers 200 at once; each repetition's "
            f"ratio: {per_rep}",
            samples=[p[0] for p in pairs],
        )
    ]
