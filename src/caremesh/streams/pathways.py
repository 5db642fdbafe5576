"""The pathways stage: clinical.fhir.v1 (+ pathway.actions.v1) → pathway.alerts.v1.

A thin shell over `caremesh.pathways`: per-patient state for every pathway lives in a Faust table
co-partitioned with the clinical and actions topics (its changelog brings it back after a
restart). Each alert candidate is consent-checked for TREAT with the coordinating organisation
as actor, audited, and written as a FHIR Communication whose id (and `ce_id`) is derived from
patient, pathway, rule and episode, so a replay after a crash yields the same id and sinks drop
the duplicate. State is read and written with no await in between, so the actions agent and the
clinical agent never overwrite each other's changes; candidates are only recorded once the
consent state is ready (a transient wait happens before the state is touched).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from caremesh import envelope
from caremesh.consent import DecisionQuery
from caremesh.consent import evaluate as evaluate_consent
from caremesh.consent.audit import decision_audit_event
from caremesh.consent.model import ActorRef
from caremesh.envelope import Envelope, PatientKey
from caremesh.errors import RejectedInputError
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
from caremesh.policy import consent_policy
from caremesh.settings import Settings
from caremesh.streams.app import CaremeshApp
from caremesh.streams.ledger_access import ledger_for
from caremesh.streams.stage import Event, StageShell, raw_topic
from caremesh.topics import CLINICAL_FHIR, PATHWAY_ACTIONS, PATHWAY_ALERTS

log = logging.getLogger(__name__)

STAGE = "pathways"
PURPOSE = "TREAT"
States = dict[str, PatientPathwayState]


def configured_pathways(settings: Settings) -> dict[str, Pathway]:
    """The pathways to run: a configured folder, else the shipped examples."""
    coordinators = settings.pathways.coordinators or None
    if settings.pathways.directory is not None:
        return load_pathways(settings.pathways.directory, coordinators=coordinators)
    return load_shipped_pathways(coordinators)


def install(app: CaremeshApp, settings: Settings) -> None:
    """Register the pathways agents, their table and the deadline timer on the app."""
    shell = StageShell(app, settings, STAGE)
    pathways = configured_pathways(settings)
    clinical = raw_topic(app, settings, CLINICAL_FHIR)
    actions = raw_topic(app, settings, PATHWAY_ACTIONS)
    alerts_topic = raw_topic(app, settings, PATHWAY_ALERTS)
    table = app.Table(
        f"{settings.kafka.topic_prefix}pathways-state",
        key_type=str,
        value_type=str,
        partitions=settings.kafka.partitions,
    )
    policy = consent_policy(settings.consent)
    metrics = shell.metrics
    out = metrics.messages_out.labels(STAGE)

    def load(patient: str) -> States:
        raw = table.get(patient)
        if not raw:
            return {}
        data: dict[str, Any] = orjson.loads(raw)
        return {pid: PatientPathwayState.from_dict(s) for pid, s in data.items() if pid in pathways}

    def store(patient: str, states: States) -> None:
        table[patient] = orjson.dumps({pid: s.to_dict() for pid, s in states.items()}).decode()

    async def emit(patient: str, candidates: list[AlertCandidate], as_of: float) -> None:
        ledger = await ledger_for(app, settings)
        await ledger.wait_caught_up(as_of=as_of)
        consents = ledger.consents(patient)
        now = datetime.now(UTC)
        for alert in candidates:
            query = DecisionQuery(
                patient=PatientKey(patient),
                purpose=PURPOSE,
                now=now,
                actor=ActorRef(reference=alert.coordinator),
                resource_type="Communication",
            )
            decision = evaluate_consent(consents, query, policy)
            metrics.consent_decisions.labels(STAGE, PURPOSE, decision.outcome.value).inc()
            audit_id = envelope.child_message_id(alert.alert_id, "consent")
            await shell.audit(
                audit_id,
                decision_audit_event(
                    query, decision, event_id=audit_id, recorded=now, observer="caremesh-pathways"
                ),
            )
            if not decision.permitted:
                continue
            env = Envelope(
                alert.alert_id,
                "urn:caremesh:stage:pathways",
                envelope.fhir_event_type("Communication"),
                extra={envelope.H_FHIR_RELEASE: "R4"},
            )
            pending = await alerts_topic.send(
                key=patient.encode(),
                value=orjson.dumps(build_communication(alert)),
                headers=env.header_map(),
            )
            await pending  # acknowledged before the state that remembers it is stored
            metrics.alerts.labels(alert.pathway_id, alert.severity).inc()
            out.inc()

    async def on_clinical(event: Event) -> None:
        patient = (event.key or b"").decode("utf-8", "replace")
        try:
            resource: dict[str, Any] = orjson.loads(event.value or b"")
        except orjson.JSONDecodeError:
            raise RejectedInputError("invalid-json", "clinical record is not JSON") from None
        as_of = float(event.message.timestamp or 0.0)
        # Clinical time, not wall time, for windows; the record time stands for "now" so that a
        # replay reaches the same decisions and alert ids.
        now = datetime.fromtimestamp(as_of, UTC) if as_of else datetime.now(UTC)
        # Wait for consent state first: a transient failure must retry before anything is stored.
        await (await ledger_for(app, settings)).wait_caught_up(as_of=as_of)

        def step(states: States) -> tuple[States, list[AlertCandidate]]:
            candidates: list[AlertCandidate] = []
            after_all = dict(states)
            for pid, pathway in pathways.items():
                before = states.get(pid, PatientPathwayState(pathway_id=pid))
                after, raised = evaluate_pathway(
                    pathway, before, resource, patient_key=PatientKey(patient), now=now
                )
                if after != before:
                    after_all[pid] = after
                candidates.extend(raised)
            return after_all, candidates

        # Alerts are written (and acknowledged) before the state that records them, so a crash in
        # between raises the same alert id again (dropped by sinks) instead of losing it. While
        # the alerts were being written a coordinator action may have changed the state: the
        # step is then taken again on the fresh state (it is deterministic), emitting only what
        # is new.
        states = load(patient)
        after, candidates = step(states)
        emitted: set[str] = set()
        while candidates:
            await emit(patient, candidates, as_of)
            emitted.update(c.alert_id for c in candidates)
            fresh = load(patient)
            if fresh == states:
                break
            states = fresh
            after, again = step(states)
            candidates = [c for c in again if c.alert_id not in emitted]
        if after != states:  # most records change nothing: no changelog write for them
            store(patient, after)

    async def on_action(event: Event) -> None:
        patient = (event.key or b"").decode("utf-8", "replace")
        action = parse_action(event.value or b"")  # RejectedInputError → dead letter
        states = load(patient)
        state = states.get(action.pathway_id)
        if state is None:
            return
        states[action.pathway_id] = apply_action(state, action)
        store(patient, states)

    @app.agent(clinical, name=f"{settings.kafka.topic_prefix}pathways")
    async def pathways_agent(stream: object) -> None:
        async for event in stream.events():  # type: ignore[attr-defined]
            await shell.handle(event, on_clinical)

    @app.agent(actions, name=f"{settings.kafka.topic_prefix}pathway-actions")
    async def actions_agent(stream: object) -> None:
        async for event in stream.events():  # type: ignore[attr-defined]
            await shell.handle(event, on_action)

    @app.timer(settings.pathways.tick_interval_seconds)  # type: ignore[untyped-decorator]
    async def deadlines() -> None:
        now = datetime.now(UTC)
        try:
            await (await ledger_for(app, settings)).wait_caught_up(as_of=now.timestamp())
        except Exception as exc:  # noqa: BLE001 - try again on the next tick
            log.warning("deadline check skipped: consent state not ready (%s)", type(exc).__name__)
            return
        due: list[tuple[str, list[AlertCandidate]]] = []
        for patient, _raw in list(table.items()):
            states = load(patient)
            changed = False
            raised_all: list[AlertCandidate] = []
            for pid, state in states.items():
                after, raised = tick_pathway(
                    pathways[pid], state, now, patient_key=PatientKey(patient)
                )
                if after != state:
                    states[pid] = after
                    changed = True
                raised_all.extend(raised)
            if changed:
                store(patient, states)
            if raised_all:
                due.append((patient, raised_all))
        for patient, raised in due:
            try:
                await emit(patient, raised, now.timestamp())
            except Exception as exc:  # noqa: BLE001 - the timer must keep running
                log.warning("deadline alerts not emitted this round (%s)", type(exc).__name__)
