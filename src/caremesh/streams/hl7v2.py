"""The hl7v2 stage: ingest.hl7v2.v1 → ingest.fhir.v1 (HL7 v2 mapped to a FHIR R4 Bundle).

A thin shell over `caremesh.fhir.hl7v2_map.hl7v2_to_fhir`. The mapped Bundle keeps the source
message id: it is written with the same `ce_id` and key as the raw message (derived from MSH-10),
so a mapping fix can be replayed from the raw topic and downstream deduplication still holds.
"""

from __future__ import annotations

from caremesh import envelope
from caremesh.envelope import Envelope
from caremesh.fhir.hl7v2_map import hl7v2_to_fhir
from caremesh.settings import Settings
from caremesh.streams.app import CaremeshApp
from caremesh.streams.stage import Event, StageShell, raw_topic, text_headers
from caremesh.topics import INGEST_FHIR, INGEST_HL7V2

STAGE = "hl7v2"


def install(app: CaremeshApp, settings: Settings) -> None:
    """Register the hl7v2 mapping agent on the app."""
    shell = StageShell(app, settings, STAGE)
    raw = raw_topic(app, settings, INGEST_HL7V2)
    ingest = raw_topic(app, settings, INGEST_FHIR)
    out = shell.metrics.messages_out.labels(STAGE)

    async def map_one(event: Event) -> None:
        headers = text_headers(event)
        value: bytes = event.value or b""
        ce_source = headers.get(envelope.H_SOURCE, "urn:caremesh:source:mllp")
        msg_id = headers.get(envelope.H_ID) or envelope.body_message_id(ce_source, value)
        bundle = hl7v2_to_fhir(value)  # InvalidHl7Error → dead letter
        env = Envelope(
            msg_id,
            ce_source,
            envelope.fhir_event_type("Bundle"),
            extra={envelope.H_FHIR_RELEASE: "R4", envelope.H_CORRELATION_ID: msg_id},
        )
        await ingest.send(key=event.key, value=bundle, headers=env.header_map())
        out.inc()

    @app.agent(raw, name=f"{settings.kafka.topic_prefix}hl7v2")
    async def hl7v2(stream: object) -> None:
        async for event in stream.events():  # type: ignore[attr-defined]
            await shell.handle(event, map_one)
