"""The share stage: clinical.fhir.v1 → outbox.<org>.v1 for care-team organisations that may see it.

For each clinical resource the recipients are the organisations of the patient's care team
(folded in a state topic co-partitioned with the clinical topic) subscribed to its resource type;
each gets it only if `evaluate(purpose TREAT, actor = that organisation)` permits, with the consent
state caught up with the ledger as of the batch's newest record. Every decision is audited. The
stage runs on the batch runner (`streams/patient_stage.py`).

Identity at recipients (DESIGN §8, `caremesh.fhir.recipient_ids`): what goes to an outbox is the
resource in its recipient form (ids unique per source, references rewritten, the INS on Patient
references), so an organisation reading its outbox topic directly gets the safe form too. A
Patient is merged into the patient's golden record (`caremesh.fhir.golden_patient`, a second
state topic) and the merged Patient is what is shared, to every care-team organisation with a
subscription: it is the anchor of everything else. An organisation that joins the care team (a
CareTeam or EpisodeOfCare record adds it, or it is admitted after a care team named it) first
receives the golden Patient, consent permitting, before anything else of that patient.

The organisations are the configured ones and those admitted with `caremesh org add`: the stage
follows the registry topic organisations.v1 (`caremesh.tables.organisations`), so a new member is
served, and a removed one no longer written to, without a restart.

The handler is a module-level function of the stage's context (`ShareContext`) and a `Record`,
unit-tested without a broker (tests/unit/streams/test_share_stage.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from caremesh import envelope
from caremesh.consent import ConsentPolicy, DecisionQuery
from caremesh.consent.model import ActorRef
from caremesh.consent.policy import consent_policy
from caremesh.envelope import PatientKey
from caremesh.fhir.elements import clinical_date
from caremesh.fhir.golden_patient import merge_patient
from caremesh.fhir.patient_key import source_patient_key
from caremesh.fhir.recipient_ids import (
    SOURCE_SYSTEM_PREFIX,
    RecipientContext,
    for_recipient_holding,
    for_recipients,
    ins_of_key,
)
from caremesh.kafka.io import Output
from caremesh.metrics import Metrics
from caremesh.settings import Settings
from caremesh.sharing import care_team as sharing
from caremesh.streams.batch import WorkerApp
from caremesh.streams.patient_stage import ConsentGate, PatientStage
from caremesh.streams.record import Record
from caremesh.tables.organisations import OrganisationRegistry, follow
from caremesh.tables.state import PartitionState
from caremesh.topics import CLINICAL_FHIR, ORGANISATIONS, outbox_topic

log = logging.getLogger(__name__)

STAGE = "share"
PURPOSE = "TREAT"
PATIENT = "Patient"


def _parse_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ShareContext:
    """What the share handler works with: the organisations, the stage's state (care teams,
    golden Patients, recent resources when backfill is on), consent, the outbox prefix."""

    registry: OrganisationRegistry
    teams: PartitionState
    goldens: PartitionState
    recents: PartitionState | None
    backfill_days: int
    gate: ConsentGate
    policy: ConsentPolicy
    prefix: str
    metrics: Metrics


def share_one(ctx: ShareContext, rec: Record) -> list[Output]:
    """One clinical record to the care-team organisations its patient's consent permits (each
    decision audited), the care team, golden Patient and recent resources kept up to date."""
    value: bytes = rec.value or b""
    patient = rec.patient
    partition = rec.partition
    resource = rec.clinical
    headers = rec.text_headers
    ce_id = headers.get(envelope.H_ID, "")
    outputs: list[Output] = []
    raw_team = ctx.teams.get(partition, patient.encode())
    team: dict[str, list[str]] = orjson.loads(raw_team) if raw_team else {}
    raw_golden = ctx.goldens.get(partition, patient.encode())
    golden: dict[str, Any] = orjson.loads(raw_golden) if raw_golden else {}
    rtype = str(resource.get("resourceType", ""))
    recipient = RecipientContext(
        source=headers.get(envelope.H_SOURCE, "").removeprefix(SOURCE_SYSTEM_PREFIX) or "unknown",
        patient_key=patient,
        fallback_id=ce_id or patient,
        links=golden.get("links") or {},
        organisations={o.id: o.name for o in ctx.registry.organisations.values()},
    )
    shared: dict[str, Any] | bytes
    stored = orjson.dumps(golden) if golden else b""
    if rtype == PATIENT:
        golden = _fold_golden(golden, resource, recipient)
        shared = golden["patient"]
    elif rtype == "Bundle":
        shared = value  # a document or message Bundle travels whole
    else:
        shared = for_recipients(resource, recipient)
    before = sharing.care_team(team)
    changed = sharing.fold_care_team(team, resource, ctx.registry.known)
    if changed is not None:
        team = changed
        outputs.append(ctx.teams.put(partition, patient.encode(), orjson.dumps(team)))
    members = sharing.care_team(team)
    recent: list[dict[str, Any]] = []
    if ctx.recents is not None:
        raw_recent = ctx.recents.get(partition, patient.encode())
        cutoff = (now_ts := datetime.now(UTC)) - timedelta(days=ctx.backfill_days)
        recent = [
            r
            for r in (orjson.loads(raw_recent) if raw_recent else [])
            if (_parse_date(r["date"]) or now_ts) >= cutoff
        ]
    sent = set(golden.get("sent") or ()) & members  # who has the golden Patient
    now = datetime.now(UTC)

    def patient_first(org: str) -> None:
        """The golden Patient, before anything else of the patient reaches `org`."""
        if org in sent or not golden.get("patient") or not ctx.registry.subscriptions.get(org):
            return
        child = envelope.child_message_id(ce_id or patient, f"join:{org}")
        join_headers = envelope.Envelope(
            child,
            f"urn:caremesh:stage:{STAGE}",
            envelope.fhir_event_type(PATIENT),
            extra={envelope.H_CORRELATION_ID: ce_id},
        ).headers()
        done = _share_to(
            ctx, org, patient, golden["patient"], golden["patient"], child, join_headers, now
        )
        outputs.extend(done)
        if len(done) > 1:
            sent.add(org)
        for item in recent:  # then, if configured, the resources of the last N days
            if item["type"] in ctx.registry.subscriptions.get(org, frozenset()):
                seed = envelope.child_message_id(item["ce_id"], f"backfill:{org}")
                again = [(k, v) for k, v in item["headers"] if k != envelope.H_ID] + [
                    (envelope.H_ID, seed)
                ]
                outputs.extend(
                    _share_to(
                        ctx, org, patient, item["resource"], item["resource"], seed, again, now
                    )
                )

    if rtype != PATIENT:
        for org in sorted(members - before):  # joined the care team: the Patient first
            patient_first(org)
    if rtype == PATIENT:
        targets = sorted(o for o in members if ctx.registry.subscriptions.get(o))
    else:
        targets = sharing.recipients(team, rtype, ctx.registry.subscriptions)
    out_headers: list[tuple[str, str | bytes | None]] = [
        (str(h[0]), h[1]) for h in rec.headers if h[0] != envelope.H_CONSENT_DECISIONS
    ]
    for org in targets:
        if rtype != PATIENT:
            patient_first(org)  # e.g. admitted after the care team named it
        done = _share_to(ctx, org, patient, resource, shared, ce_id or patient, out_headers, now)
        outputs.extend(done)
        if rtype == PATIENT and len(done) > 1:
            sent.add(org)
    if ctx.recents is not None and isinstance(shared, dict) and rtype != PATIENT:
        kept = [r for r in recent if r["resource"].get("id") != shared.get("id")]
        arrival = datetime.now(UTC).isoformat()
        kept.append(
            {
                "type": rtype,
                "date": clinical_date(resource) or arrival,
                "ce_id": ce_id or patient,
                "resource": shared,
                "headers": [
                    (k, v) for k, v in headers.items() if k != envelope.H_CONSENT_DECISIONS
                ],
            }
        )
        outputs.append(ctx.recents.put(partition, patient.encode(), orjson.dumps(kept)))
    if golden:
        golden["sent"] = sorted(sent)
        new_state = orjson.dumps(golden)
        if new_state != stored:
            outputs.append(ctx.goldens.put(partition, patient.encode(), new_state))
    return outputs


def _share_to(  # noqa: PLR0917 - one call site per kind of record
    ctx: ShareContext,
    org: str,
    patient: str,
    resource: dict[str, Any],
    shared: dict[str, Any] | bytes,
    decision_seed: str,
    headers: list[tuple[str, str | bytes | None]],
    now: datetime,
) -> list[Output]:
    """The audit of one consent decision, and the outbox record when it permits."""
    query = DecisionQuery(
        patient=PatientKey(patient),
        purpose=PURPOSE,
        now=now,
        actor=ActorRef(reference=f"Organization/{org}"),
        resource_type=str(resource.get("resourceType", "")),
        security_labels=sharing.security_labels(resource),
        data_date=_parse_date(clinical_date(resource)),
    )
    audit_id = envelope.child_message_id(decision_seed, f"share:{org}")
    decision, audit = ctx.gate.decide(ctx.gate.consents(patient), query, ctx.policy, audit_id, now)
    if not decision.permitted or org not in ctx.registry.known:
        return [audit]  # denied, or removed while this record was being decided
    ctx.metrics.messages_out.labels(STAGE).inc()
    record_headers = [
        *headers,
        (envelope.H_CONSENT_DECISIONS, ",".join(decision.consent_ids)),
    ]
    if isinstance(shared, bytes):
        value = shared
    else:  # references to types the organisation does not receive stay logical
        held = ctx.registry.subscriptions.get(org, frozenset()) | {PATIENT}
        value = orjson.dumps(for_recipient_holding(shared, held))
    key = patient.encode()
    return [audit, Output(ctx.prefix + outbox_topic(org), key, value, record_headers)]


def install(app: WorkerApp, settings: Settings) -> None:
    """Register the share stage (and its care-team state) on the worker."""
    stage = PatientStage(settings, STAGE, app.metrics)
    registry = OrganisationRegistry(settings.organisations)
    prefix = settings.kafka.topic_prefix
    backfill_days = settings.delivery.backfill_days
    ctx = ShareContext(
        registry=registry,
        teams=stage.state("care-teams"),
        goldens=stage.state("golden-patients"),
        recents=stage.state("recent") if backfill_days else None,
        backfill_days=backfill_days,
        gate=stage,
        policy=consent_policy(settings.consent),
        prefix=prefix,
        metrics=stage.metrics,
    )

    def follow_organisations() -> None:
        asyncio.run(follow(registry, settings.kafka, prefix + ORGANISATIONS))

    def prepare() -> None:
        threading.Thread(target=follow_organisations, name="org-registry", daemon=True).start()

    app.stages.append(
        stage.runner(
            sources=[CLINICAL_FHIR],
            handler=functools.partial(share_one, ctx),
            states=[s for s in (ctx.teams, ctx.goldens, ctx.recents) if s is not None],
            prepare=prepare,
        )
    )


def _fold_golden(
    golden: dict[str, Any], resource: dict[str, Any], ctx: RecipientContext
) -> dict[str, Any]:
    """The patient's golden record after one of its Patient resources (JSON-able).

    `patient` is the merged Patient in its recipient form; `links` maps each source-scoped
    Patient key that described this person to the INS, so references to any of them point to
    the one recipient Patient; `sent` lists the care-team organisations that have it.
    """
    links = dict(golden.get("links") or {})
    ins = ins_of_key(ctx.patient_key)
    local = resource.get("id")
    if ins is not None and isinstance(local, str):
        links[source_patient_key(ctx.source, local)] = ins
    ctx = RecipientContext(ctx.source, ctx.patient_key, ctx.fallback_id, links, ctx.organisations)
    merged = merge_patient(golden.get("patient"), for_recipients(resource, ctx))
    return {"patient": merged, "links": links, "sent": golden.get("sent") or []}
