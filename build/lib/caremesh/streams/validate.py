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

The handler is a module-level function of the stage's context (`ValidateContext`) and a `Record`,
unit-tested without a broker (tests/unit/streams/test_validate_stage.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from caremesh import envelope
from caremesh.envelope import Envelope
from caremesh.errors import RejectedInputError
from caremesh.fhir.ingest import process_ingest
from caremesh.fhir.validate import warm_up
from caremesh.kafka.admin import ensure_compacted
from caremesh.kafka.client import Message
from caremesh.kafka.io import Output
from caremesh.metrics import Metrics
from caremesh.settings import Settings
from caremesh.streams.batch import BatchRunner, WorkerApp
from caremesh.streams.record import Record, to_record
from caremesh.tables.state import GlobalState, PartitionState
from caremesh.topics import CLINICAL_FHIR, DEADLETTER, INGEST_FHIR, patient_links_topic

log = logging.getLogger(__name__)

STAGE = "validate"
SOURCE_URN = "urn:caremesh:source:"


def source_of(ce_source: str) -> str:
    """The source id of a `ce_source` URN (`urn:caremesh:source:<id>`), or the text itself."""
    return ce_source.removeprefix(SOURCE_URN) or "unknown"


@dataclass(slots=True)
class ValidateContext:
    """What the validate handler works with: learned patient links, the seen message ids, the
    sources' declared FHIR releases and the clinical topic."""

    links: GlobalState
    seen: PartitionState
    releases: Mapping[str, str]
    clinical_topic: str
    metrics: Metrics
    window_seconds: float
    last_purge: float = field(default_factory=time.time)


def validate_one(ctx: ValidateContext, rec: Record) -> list[Output]:
    """One ingest message: its validated resources for clinical.fhir.v1 (none for a message
    seen within the window), the patient links it taught, and its id remembered."""
    headers = rec.text_headers
    ce_source = headers.get(envelope.H_SOURCE, "")
    source = source_of(ce_source)
    value: bytes = rec.value or b""
    msg_id = headers.get(envelope.H_ID) or envelope.body_message_id(source, value)
    if ctx.seen.get(rec.partition, msg_id.encode()) is not None:
        ctx.metrics.duplicates.labels(STAGE).inc()
        return []
    hint = headers.get(envelope.H_FHIR_RELEASE) or ctx.releases.get(source)
    result = process_ingest(value, source, msg_id, hint, ctx.links.data)
    if result.rejection is not None:
        raise RejectedInputError(result.rejection.code, result.rejection.detail)
    outputs = [ctx.links.put(m.local_key, str(m.ins)) for m in result.learned]
    for out in result.records:
        env = Envelope(
            out.message_id,
            ce_source or SOURCE_URN + source,
            envelope.fhir_event_type(out.resource_type),
            extra={envelope.H_FHIR_RELEASE: out.release, envelope.H_CORRELATION_ID: msg_id},
        )
        outputs.append(Output(ctx.clinical_topic, out.key.encode(), out.value, env.headers()))
    outputs.append(ctx.seen.put(rec.partition, msg_id.encode(), repr(time.time()).encode()))
    ctx.metrics.messages_out.labels(STAGE).inc(len(result.records))
    return outputs


def purge_seen(ctx: ValidateContext, now: float) -> None:
    """Forget (in memory) the message ids older than the window, at most once a minute; the
    changelog's retention forgets them on the broker."""
    if now - ctx.last_purge <= 60:
        return
    ctx.last_purge = now
    cutoff = now - ctx.window_seconds
    for part in ctx.seen.data.values():
        for key in [k for k, at in part.items() if float(at) < cutoff]:
            del part[key]


def install(app: WorkerApp, settings: Settings) -> None:
    """Register the validate stage on the worker."""
    warm_up()
    prefix = settings.kafka.topic_prefix
    bootstrap = settings.kafka
    base = f"{prefix}{settings.worker.app_id}-validate"
    ctx = ValidateContext(
        links=GlobalState(bootstrap, patient_links_topic(prefix, settings.worker.app_id)),
        seen=PartitionState(bootstrap, f"{base}-seen-messages"),
        releases={s.id: s.fhir_release for s in settings.sources if s.fhir_release},
        clinical_topic=prefix + CLINICAL_FHIR,
        metrics=app.metrics,
        window_seconds=settings.worker.dedup_window_hours * 3600.0,
    )

    def handle(msg: Message) -> list[Output]:
        return validate_one(ctx, to_record(msg, prefix))

    def before_batch(batch: list[Message]) -> None:
        ctx.links.catch_up()  # mappings other validate processes learned
        purge_seen(ctx, time.time())

    def prepare() -> None:
        partitions = settings.kafka.partitions
        replication = settings.kafka.replication_factor
        ensure_compacted(bootstrap, ctx.links.topic, partitions, replication)
        ensure_compacted(
            bootstrap,
            ctx.seen.changelog,
            partitions,
            replication,
            retention_ms=int(ctx.window_seconds * 1000),
        )
        ctx.links.load()

    runner = BatchRunner(
        stage=STAGE,
        bootstrap=bootstrap,
        group_id=f"{settings.worker.app_id}-{STAGE}",
        source=prefix + INGEST_FHIR,
        handler=handle,
        metrics=app.metrics,
        deadletter_topic=prefix + DEADLETTER,
        states=[ctx.seen],
        on_batch_start=before_batch,
        prepare=prepare,
    )
    app.stages.append(runner)
