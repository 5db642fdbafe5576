"""The validate stage: ingest.fhir.v1 → clinical.fhir.v1 (one validated resource per record).

A thin shell over `caremesh.fhir.ingest.process_ingest`. The learned source-id → INS mappings
of DESIGN §3 live in a Faust GlobalTable (every worker sees all of them, since the ingest topic is
keyed by message id, not by patient). Rejected messages go to deadletter.v1 through the shell.
"""

from __future__ import annotations

import logging
import time

from caremesh import envelope
from caremesh.envelope import Envelope
from caremesh.errors import RejectedInputError
from caremesh.fhir.ingest import process_ingest
from caremesh.fhir.validate import warm_up
from caremesh.settings import Settings
from caremesh.streams.app import CaremeshApp
from caremesh.streams.stage import Event, StageShell, raw_topic, text_headers
from caremesh.topics import CLINICAL_FHIR, INGEST_FHIR

log = logging.getLogger(__name__)

STAGE = "validate"
SOURCE_URN = "urn:caremesh:source:"


def source_of(ce_source: str) -> str:
    """The source id of a `ce_source` URN (`urn:caremesh:source:<id>`), or the text itself."""
    return ce_source.removeprefix(SOURCE_URN) or "unknown"


def install(app: CaremeshApp, settings: Settings) -> None:
    """Register the validate agent and its table on the app."""
    shell = StageShell(app, settings, STAGE)
    warm_up()
    ingest = raw_topic(app, settings, INGEST_FHIR)
    clinical = raw_topic(app, settings, CLINICAL_FHIR)
    links = app.GlobalTable(
        f"{settings.kafka.topic_prefix}validate-patient-links",
        key_type=str,
        value_type=str,
        partitions=settings.kafka.partitions,
    )
    # Message ids seen within the idempotency window: a message sent again (same Idempotency-Key,
    # Bundle.identifier, MSH-10 or body) adds nothing downstream. The ingest topic is keyed by
    # message id, so this table is co-partitioned with it.
    seen = app.Table(
        f"{settings.kafka.topic_prefix}validate-seen-messages",
        key_type=str,
        value_type=float,
        partitions=settings.kafka.partitions,
    )
    window = settings.worker.dedup_window_hours * 3600.0
    releases = {s.id: s.fhir_release for s in settings.sources if s.fhir_release}
    out = shell.metrics.messages_out.labels(STAGE)

    async def validate_one(event: Event) -> None:
        headers = text_headers(event)
        ce_source = headers.get(envelope.H_SOURCE, "")
        source = source_of(ce_source)
        value: bytes = event.value or b""
        msg_id = headers.get(envelope.H_ID) or envelope.body_message_id(source, value)
        if msg_id in seen:
            shell.metrics.duplicates.labels(STAGE).inc()
            return
        hint = headers.get(envelope.H_FHIR_RELEASE) or releases.get(source)
        result = process_ingest(value, source, msg_id, hint, links)
        if result.rejection is not None:
            raise RejectedInputError(result.rejection.code, result.rejection.detail)
        for mapping in result.learned:
            links[mapping.local_key] = str(mapping.ins)
        for rec in result.records:
            env = Envelope(
                rec.message_id,
                ce_source or SOURCE_URN + source,
                envelope.fhir_event_type(rec.resource_type),
                extra={envelope.H_FHIR_RELEASE: rec.release, envelope.H_CORRELATION_ID: msg_id},
            )
            await clinical.send(key=rec.key.encode(), value=rec.value, headers=env.header_map())
        seen[msg_id] = time.time()
        out.inc(len(result.records))

    @app.timer(3600.0)  # type: ignore[untyped-decorator]
    async def forget_old_messages() -> None:
        cutoff = time.time() - window
        old = [key for key, at in list(seen.items()) if at < cutoff]
        for key in old:
            del seen[key]

    @app.agent(ingest, name=f"{settings.kafka.topic_prefix}validate")
    async def validate(stream: object) -> None:
        async for event in stream.events():  # type: ignore[attr-defined]
            await shell.handle(event, validate_one)
