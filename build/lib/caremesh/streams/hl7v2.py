"""The hl7v2 stage: ingest.hl7v2.v1 → ingest.fhir.v1 (HL7 v2 mapped to a FHIR R4 Bundle).

A thin shell over `caremesh.fhir.hl7v2_map.hl7v2_to_fhir`, run by the confluent-kafka batch runner
(stateless). The mapped Bundle keeps the source message id: it is written with the same `ce_id`
and key as the raw message (derived from MSH-10), so a mapping fix can be replayed from the raw
topic and downstream deduplication still holds. The handler is a module-level function of the
stage's context and a `Record` (tests/unit/streams/test_hl7v2_stage.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from caremesh import envelope
from caremesh.envelope import Envelope
from caremesh.fhir.hl7v2_map import hl7v2_to_fhir
from caremesh.kafka.client import Message
from caremesh.kafka.io import Output
from caremesh.metrics import Metrics
from caremesh.settings import Settings
from caremesh.streams.batch import BatchRunner, WorkerApp
from caremesh.streams.record import Record, to_record
from caremesh.topics import DEADLETTER, INGEST_FHIR, INGEST_HL7V2

STAGE = "hl7v2"


@dataclass(frozen=True, slots=True)
class Hl7v2Context:
    """Where the mapped Bundles go, and the metrics."""

    ingest_topic: str
    metrics: Metrics


def map_one(ctx: Hl7v2Context, rec: Record) -> list[Output]:
    """One raw HL7 v2 message as its FHIR Bundle for ingest.fhir.v1 (InvalidHl7Error: dead
    letter)."""
    headers = rec.text_headers
    value: bytes = rec.value or b""
    ce_source = headers.get(envelope.H_SOURCE, "urn:caremesh:source:mllp")
    msg_id = headers.get(envelope.H_ID) or envelope.body_message_id(ce_source, value)
    bundle = hl7v2_to_fhir(value)
    env = Envelope(
        msg_id,
        ce_source,
        envelope.fhir_event_type("Bundle"),
        extra={envelope.H_FHIR_RELEASE: "R4", envelope.H_CORRELATION_ID: msg_id},
    )
    ctx.metrics.messages_out.labels(STAGE).inc()
    # Same partition as the raw message: the MLLP listener chose it by patient (see
    # caremesh.connectors.ordering), so one patient's messages keep their order.
    return [Output(ctx.ingest_topic, rec.key, bundle, env.headers(), partition=rec.partition)]


def install(app: WorkerApp, settings: Settings) -> None:
    """Register the hl7v2 mapping stage on the worker."""
    prefix = settings.kafka.topic_prefix
    ctx = Hl7v2Context(ingest_topic=prefix + INGEST_FHIR, metrics=app.metrics)

    def handle(msg: Message) -> list[Output]:
        return map_one(ctx, to_record(msg, prefix))

    app.stages.append(
        BatchRunner(
            stage=STAGE,
            bootstrap=settings.kafka,
            group_id=f"{settings.worker.app_id}-{STAGE}",
            source=prefix + INGEST_HL7V2,
            handler=handle,
            metrics=app.metrics,
            deadletter_topic=prefix + DEADLETTER,
        )
    )
