"""The pathways stage: clinical.fhir.v1 (+ pathway.actions.v1) → pathway.alerts.v1.

A thin shell over `caremesh.pathways` on the batch runner (`streams/patient_stage.py`): one
consumer reads the clinical and actions topics (co-partitioned by patient), so one thread owns a
patient's state and the two never overwrite each other's changes. Per-patient state for every
pathway lives in a state topic partitioned like them (it comes back after a restart). Each alert
candidate is consent-checked for TREAT with the coordinating organisation as actor (the consent
state is caught up before the batch is touched), audited, and written as a FHIR Communication
whose id (and `ce_id`) is derived from patient, pathway, rule and episode, so a replay after a
crash yields the same id and sinks drop the duplicate. Alerts are acknowledged by the broker
before the state that remembers them is written (the runner's two phases), so a crash in between
raises the same alert id again instead of losing it. Deadlines are checked on a timer in the
same thread.

The handlers are module-level functions of the stage's context (`PathwaysContext`) and a
`Record`, so they are unit-tested without a broker (tests/unit/streams/test_pathways_stage.py).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from caremesh import envelope
from caremesh.consent import ConsentPolicy, DecisionQuery
from caremesh.consent.model import ActorRef
from caremesh.consent.policy import consent_policy
from caremesh.envelope import Envelope, PatientKey
from caremesh.kafka.io import Output
from caremesh.metrics import Metrics
from caremesh.pathways import (
    AlertCandidate,
    Pathway,
    PatientPathwayState,
    apply_action,
    build_communication,
    load_pathways,
    load_shipped_pathways,
    parse_action,
)
from caremesh.pathways import evaluate as evaluate_pathway
from caremesh.pathways import tick as tick_pathway
from caremesh.settings import PathwaySettings, Settings
from caremesh.streams.batch import WorkerApp
from caremesh.streams.patient_stage import ConsentGate, PatientStage
from caremesh.streams.record import Record
from caremesh.tables.state import PartitionState
from caremesh.topics import CLINICAL_FHIR, PATHWAY_ACTIONS, PATHWAY_ALERTS

log = logging.getLogger(__name__)

STAGE = "pathways"
PURPOSE = "TREAT"
States = dict[str, PatientPathwayState]


def configured_pathways(pathways: PathwaySettings) -> dict[str, Pathway]:
    """The pathways to run: a configured folder, else the shipped examples."""
    coordinators = pathways.coordinators or None
    if pathways.directory is not None:
        return load_pathways(pathways.directory, coordinators=coordinators)
    return load_shipped_pathways(coordinators)


@dataclass(frozen=True, slots=True)
class PathwaysContext:
    """What the pathways handlers work with: the pathways, the per-patient state, consent."""

    pathways: Mapping[str, Pathway]
    table: PartitionState
    gate: ConsentGate
    policy: ConsentPolicy
    alerts_topic: str
    metrics: Metrics


def _load(ctx: PathwaysContext, partition: int, patient: str) -> States:
    raw = ctx.table.get(partition, patient.encode())
    if not raw:
        return {}
    data: dict[str, Any] = orjson.loads(raw)
    return {pid: PatientPathwayState.from_dict(s) for pid, s in data.items() if pid in ctx.pathways}


def _store(ctx: PathwaysContext, partition: int, patient: str, states: States) -> Output:
    value = orjson.dumps({pid: s.to_dict() for pid, s in states.items()})
    return ctx.table.put(partition, patient.encode(), value)


def _emit(ctx: PathwaysContext, patient: str, candidates: list[AlertCandidate]) -> list[Output]:
    """Each candidate's consent decision (audited) and, where permitted, its Communication."""
    consents = ctx.gate.consents(patient)
    now = datetime.now(UTC)
    outputs: list[Output] = []
    for alert in candidates:
        query = DecisionQuery(
            patient=PatientKey(patient),
            purpose=PURPOSE,
            now=now,
            actor=ActorRef(reference=alert.coordinator),
            resource_type="Communication",
        )
        audit_id = envelope.child_message_id(alert.alert_id, "consent")
        decision, audit = ctx.gate.decide(consents, query, ctx.policy, audit_id, now)
        outputs.append(audit)
        if not decision.permitted:
            continue
        env = Envelope(
            alert.alert_id,
            "urn:caremesh:stage:pathways",
            envelope.fhir_event_type("Communication"),
            extra={envelope.H_FHIR_RELEASE: "R4"},
        )
        outputs.append(
            Output(
                ctx.alerts_topic,
                patient.encode(),
                orjson.dumps(build_communication(alert)),
                env.headers(),
            )
        )
        ctx.metrics.alerts.labels(alert.pathway_id, alert.severity).inc()
        ctx.metrics.messages_out.labels(STAGE).inc()
    return outputs


def on_clinical(ctx: PathwaysContext, rec: Record) -> list[Output]:
    """A clinical record through every pathway: alerts raised, state written if it changed."""
    patient = rec.patient
    resource = rec.clinical
    # Clinical time, not wall time, for windows; the record time stands for "now" so that a
    # replay reaches the same decisions and alert ids.
    now = datetime.fromtimestamp(rec.time, UTC)
    states = _load(ctx, rec.partition, patient)
    after_all = dict(states)
    candidates: list[AlertCandidate] = []
    for pid, pathway in ctx.pathways.items():
        before = states.get(pid, PatientPathwayState(pathway_id=pid))
        after, raised = evaluate_pathway(
            pathway, before, resource, patient_key=PatientKey(patient), now=now
        )
        if after != before:
            after_all[pid] = after
        candidates.extend(raised)
    outputs = _emit(ctx, patient, candidates) if candidates else []
    if after_all != states:  # most records change nothing: no state write for them
        outputs.append(_store(ctx, rec.partition, patient, after_all))
    return outputs


def on_action(ctx: PathwaysContext, rec: Record) -> list[Output]:
    """A coordinator's action on an alert, applied to the pathway's state."""
    patient = rec.patient
    action = parse_action(rec.value or b"")  # RejectedInputError → dead letter
    states = _load(ctx, rec.partition, patient)
    state = states.get(action.pathway_id)
    if state is None:
        return []
    states[action.pathway_id] = apply_action(state, action)
    return [_store(ctx, rec.partition, patient, states)]


def handle(ctx: PathwaysContext, rec: Record) -> list[Output]:
    """One record of the stage's sources."""
    return on_action(ctx, rec) if rec.topic == PATHWAY_ACTIONS else on_clinical(ctx, rec)


def deadlines(ctx: PathwaysContext, now: datetime) -> list[Output]:
    """Every held patient's pathways ticked at `now`: deadline alerts and state changes."""
    outputs: list[Output] = []
    for partition, key, _raw in ctx.table.items():
        patient = key.decode("utf-8", "replace")
        states = _load(ctx, partition, patient)
        changed = False
        raised_all: list[AlertCandidate] = []
        for pid, state in states.items():
            after, raised = tick_pathway(
                ctx.pathways[pid], state, now, patient_key=PatientKey(patient)
            )
            if after != state:
                states[pid] = after
                changed = True
            raised_all.extend(raised)
        if raised_all:
            outputs += _emit(ctx, patient, raised_all)
        if changed:
            outputs.append(_store(ctx, partition, patient, states))
    return outputs


def install(app: WorkerApp, settings: Settings) -> None:
    """Register the pathways stage (clinical records, coordinator actions, deadlines)."""
    stage = PatientStage(settings, STAGE, app.metrics)
    table = stage.state("state")
    ctx = PathwaysContext(
        pathways=configured_pathways(settings.pathways),
        table=table,
        gate=stage,
        policy=consent_policy(settings.consent),
        alerts_topic=settings.kafka.topic_prefix + PATHWAY_ALERTS,
        metrics=stage.metrics,
    )

    def tick() -> list[Output]:
        now = datetime.now(UTC)
        stage.ledger.wait_caught_up(as_of=now.timestamp())
        return deadlines(ctx, now)

    app.stages.append(
        stage.runner(
            sources=[CLINICAL_FHIR, PATHWAY_ACTIONS],
            handler=functools.partial(handle, ctx),
            states=[table],
            on_tick=tick,
            tick_interval=settings.pathways.tick_interval_seconds,
        )
    )
