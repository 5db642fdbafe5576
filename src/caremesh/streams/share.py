"""The share stage: clinical.fhir.v1 → outbox.<org>.v1 for care-team organisations that may see it.

For each clinical resource the recipients are the organisations of the patient's care team
(folded in a state topic co-partitioned with the clinical topic) subscribed to its resource type;
each gets it only if `evaluate(purpose TREAT, actor = that organisation)` permits, with the consent
state caught up with the ledger as of the batch's newest record. Every decision is audited. The
stage runs on the batch runner (`streams/patient_stage.py`).

The organisations are the configured ones and those admitted with `caremesh org add`: the stage
follows the registry topic organisations.v1 (`caremesh.tables.organisations`), so a new member is
served, and a removed one no longer written to, without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import orjson

from caremesh import envelope
from caremesh.consent import DecisionQuery
from caremesh.consent.model import ActorRef
from caremesh.consent.policy import consent_policy
from caremesh.envelope import PatientKey
from caremesh.errors import RejectedInputError
from caremesh.fhir.elements import clinical_date
from caremesh.kafka.client import Message
from caremesh.kafka.io import Output
from caremesh.settings import Settings
from caremesh.sharing import care_team as sharing
from caremesh.streams.batch import WorkerApp
from caremesh.streams.patient_stage import PatientStage, patient_of, text_headers
from caremesh.tables.organisations import OrganisationRegistry, follow
from caremesh.topics import CLINICAL_FHIR, ORGANISATIONS, outbox_topic

log = logging.getLogger(__name__)

STAGE = "share"
PURPOSE = "TREAT"


def _parse_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def install(app: WorkerApp, settings: Settings) -> None:
    """Register the share stage (and its care-team state) on the worker."""
    stage = PatientStage(settings, STAGE, app.metrics)
    registry = OrganisationRegistry(settings.organisations)
    prefix = settings.kafka.topic_prefix
    policy = consent_policy(settings.consent)
    teams = stage.state("care-teams")
    metrics = stage.metrics
    out = metrics.messages_out.labels(STAGE)

    def share_one(msg: Message) -> list[Output]:
        value: bytes = msg.value() or b""
        patient = patient_of(msg)
        partition = msg.partition() or 0
        try:
            resource: dict[str, Any] = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RejectedInputError("invalid-json", "clinical record is not JSON") from None
        outputs: list[Output] = []
        raw_team = teams.get(partition, patient.encode())
        team: dict[str, list[str]] = orjson.loads(raw_team) if raw_team else {}
        changed = sharing.fold_care_team(team, resource, registry.known)
        if changed is not None:
            team = changed
            outputs.append(teams.put(partition, patient.encode(), orjson.dumps(team)))
        rtype = str(resource.get("resourceType", ""))
        targets = sharing.recipients(team, rtype, registry.subscriptions)
        if not targets:
            return outputs
        consents = stage.consents(patient)
        ce_id = text_headers(msg).get(envelope.H_ID, "")
        now = datetime.now(UTC)
        labels = sharing.security_labels(resource)
        data_date = _parse_date(clinical_date(resource))
        for org in targets:
            query = DecisionQuery(
                patient=PatientKey(patient),
                purpose=PURPOSE,
                now=now,
                actor=ActorRef(reference=f"Organization/{org}"),
                resource_type=rtype,
                security_labels=labels,
                data_date=data_date,
            )
            audit_id = envelope.child_message_id(ce_id or patient, f"share:{org}")
            decision, audit = stage.decide(consents, query, policy, audit_id, now)
            outputs.append(audit)
            if not decision.permitted or org not in registry.known:
                continue  # denied, or removed while this record was being decided
            out_headers: list[tuple[str, str | bytes | None]] = [
                (str(h[0]), h[1])
                for h in (msg.headers() or [])
                if h[0] != envelope.H_CONSENT_DECISIONS
            ]
            out_headers.append((envelope.H_CONSENT_DECISIONS, ",".join(decision.consent_ids)))
            outputs.append(Output(prefix + outbox_topic(org), msg.key(), value, out_headers))
            out.inc()
        return outputs

    def follow_organisations() -> None:
        asyncio.run(follow(registry, settings.kafka, prefix + ORGANISATIONS))

    def prepare() -> None:
        threading.Thread(target=follow_organisations, name="org-registry", daemon=True).start()

    app.stages.append(
        stage.runner(sources=[CLINICAL_FHIR], handler=share_one, states=[teams], prepare=prepare)
    )
