"""The validate stage: ingest.fhir.v1 → clinical.fhir.v1 (one validated resource per record).

A thin shell over `caremesh.fhir.ingest.process_ingest`, run by the confluent-kafka batch runner
(`streams/batch.py`; the Faust per-event path costs more than validation itself). State:

- the learned source-id → INS mappings of DESIGN §3, in a compacted topic every validate process
  reads whole (the ingest topic is keyed by message id, not by patient);
- the message ids seen within the idempotency window, per ingest partition, in a compacted topic
  partitioned like the ingest topic, so a message sent again (same Idempotency-Key,
  Bundle.identifier, MSH-10 or body) adds nothing downstream.

Transaction and batch Bundles are resolved before they are split (`caremesh.fhir.bundle`), and
validation is as strict as at the HTTP door (required bindings, FHIR's JSON rules), so what
another channel writes to ingest.fhir.v1 meets the same checks. Rejected messages go to
deadletter.v1 with a code and coordinates, never their content.
"""

from __future__ import annotations

import logging
import time

from caremesh import envelope
from caremesh.envelope import Envelope
from caremesh.errors import RejectedInputError
from caremesh.fhir.ingest import process_ingest
from caremesh.fhir.validate import warm_up
from caremesh.kafka.admin import ensure_compacted
from caremesh.kafka.client import Message
from caremesh.kafka.io import Output
from caremesh.settings import Settings
from caremesh.streams.batch import BatchRunner, WorkerApp
from caremesh.tables.state import GlobalState, PartitionState
from caremesh.topics import CLINICAL_FHIR, DEADLETTER, INGEST_FHIR, patient_links_topic

log = logging.getLogger(__name__)

STAGE = "validate"
SOURCE_URN = "urn:caremesh:source:"


def source_of(ce_source: str) -> str:
    """The source id of a `ce_source` URN (`urn:caremesh:source:<id>`), or the text itself."""
    return ce_source.removeprefix(SOURCE_URN) or "unknown"


def install(app: WorkerApp, settings: Settings) -> None:
    """Register the validate stage on the worker (it runs beside the Faust agents)."""
    warm_up()
    prefix = settings.kafka.topic_prefix
    bootstrap = settings.kafka
    base = f"{prefix}{settings.worker.app_id}-validate"
    links = GlobalState(bootstrap, patient_links_topic(prefix, settings.worker.app_id))
    seen = PartitionState(bootstrap, f"{base}-seen-messages")
    window = settings.worker.dedup_window_hours * 3600.0
    releases = {s.id: s.fhir_release for s in settings.sources if s.fhir_release}
    metrics = app.metrics
    out = metrics.messages_out.labels(STAGE)
    duplicates = metrics.duplicates.labels(STAGE)
    clinical = prefix + CLINICAL_FHIR
    last_purge = [time.time()]

    def validate_one(msg: Message) -> list[Output]:
        headers = envelope.headers_dict(msg.headers() or [])  # type: ignore[arg-type]
        ce_source = headers.get(envelope.H_SOURCE, "")
        source = source_of(ce_source)
        value: bytes = msg.value() or b""
        msg_id = headers.get(envelope.H_ID) or envelope.body_message_id(source, value)
        partition = msg.partition() or 0
        if seen.get(partition, msg_id.encode()) is not None:
            duplicates.inc()
            return []
        hint = headers.get(envelope.H_FHIR_RELEASE) or releases.get(source)
        result = process_ingest(value, source, msg_id, hint, links.data)
        if result.rejection is not None:
            raise RejectedInputError(result.rejection.code, result.rejection.detail)
        outputs = [links.put(m.local_key, str(m.ins)) for m in result.learned]
        for rec in result.records:
            env = Envelope(
                rec.message_id,
                ce_source or SOURCE_URN + source,
                envelope.fhir_event_type(rec.resource_type),
                extra={envelope.H_FHIR_RELEASE: rec.release, envelope.H_CORRELATION_ID: msg_id},
            )
            outputs.append(Output(clinical, rec.key.encode(), rec.value, env.headers()))
        outputs.append(seen.put(partition, msg_id.encode(), repr(time.time()).encode()))
        out.inc(len(result.records))
        return outputs

    def before_batch(batch: list[Message]) -> None:
        links.catch_up()  # mappings other validate processes learned
        now = time.time()
        if now - last_purge[0] > 60:
            last_purge[0] = now
            cutoff = now - window
            for part in seen.data.values():
                for key in [k for k, at in part.items() if float(at) < cutoff]:
                    del part[key]

    def prepare() -> None:
        partitions = settings.kafka.partitions
        ensure_compacted(bootstrap, links.topic, partitions, settings.kafka.replication_factor)
        ensure_compacted(
            bootstrap,
            seen.changelog,
            partitions,
            settings.kafka.replication_factor,
            retention_ms=int(window * 1000),
        )
        links.load()

    runner = BatchRunner(
        stage=STAGE,
        bootstrap=bootstrap,
        group_id=f"{settings.worker.app_id}-{STAGE}",
        source=prefix + INGEST_FHIR,
        handler=validate_one,
        metrics=metrics,
        deadletter_topic=prefix + DEADLETTER,
        states=[seen],
        on_batch_start=before_batch,
        prepare=prepare,
    )
    app.stages.append(runner)
