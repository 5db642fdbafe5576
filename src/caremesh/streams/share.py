"""The share stage: clinical.fhir.v1 → outbox.<org>.v1 for care-team organisations that may see it.

For each clinical resource the recipients are the organisations of the patient's care team
(folded in a Faust table co-partitioned with the clinical topic) subscribed to its resource type;
each gets it only if `evaluate(purpose TREAT, actor = that organisation)` permits, with the consent
state caught up with the ledger as of the record's time. Every decision is audited.

The organisations are the configured ones and those admitted with `caremesh org add`: the stage
follows the registry topic organisations.v1 (`caremesh.security.registry`), so a new member is
served, and a removed one no longer written to, without a restart.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import faust
import orjson

from caremesh import envelope, sharing
from caremesh.consent import DecisionQuery, evaluate
from caremesh.consent.audit import decision_audit_event
from caremesh.consent.model import ActorRef
from caremesh.envelope import PatientKey
from caremesh.errors import RejectedInputError
from caremesh.policy import consent_policy
from caremesh.security.registry import OrganisationRegistry, follow
from caremesh.settings import Settings
from caremesh.streams.app import CaremeshApp
from caremesh.streams.ledger_access import ledger_for
from caremesh.streams.stage import Event, StageShell, raw_topic, text_headers
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


def install(app: CaremeshApp, settings: Settings) -> None:
    """Register the share agent and its care-team table on the app."""
    shell = StageShell(app, settings, STAGE)
    clinical = raw_topic(app, settings, CLINICAL_FHIR)
    registry = OrganisationRegistry(settings.organisations)
    outboxes: dict[str, faust.TopicT] = {}

    def outbox(org: str) -> faust.TopicT:
        topic = outboxes.get(org)
        if topic is None:
            topic = outboxes[org] = raw_topic(app, settings, outbox_topic(org))
        return topic

    policy = consent_policy(settings.consent)
    teams = app.Table(
        f"{settings.kafka.topic_prefix}share-care-teams",
        key_type=str,
        value_type=str,
        partitions=settings.kafka.partitions,
    )
    metrics = shell.metrics
    out = metrics.messages_out.labels(STAGE)

    async def share_one(event: Event) -> None:
        value: bytes = event.value or b""
        patient = (event.key or b"").decode("utf-8", "replace")
        try:
            resource: dict[str, Any] = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RejectedInputError("invalid-json", "clinical record is not JSON") from None
        raw_team = teams.get(patient)
        team: dict[str, list[str]] = orjson.loads(raw_team) if raw_team else {}
        changed = sharing.fold_care_team(team, resource, registry.known)
        if changed is not None:
            team = changed
            teams[patient] = orjson.dumps(team).decode()
        rtype = str(resource.get("resourceType", ""))
        targets = sharing.recipients(team, rtype, registry.subscriptions)
        if not targets:
            return
        ledger = await ledger_for(app, settings)
        await ledger.wait_caught_up(as_of=event.message.timestamp)
        consents = ledger.consents(patient)
        headers = text_headers(event)
        ce_id = headers.get(envelope.H_ID, "")
        now = datetime.now(UTC)
        labels = sharing.security_labels(resource)
        data_date = _parse_date(sharing.clinical_date(resource))
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
            decision = evaluate(consents, query, policy)
            metrics.consent_decisions.labels(STAGE, PURPOSE, decision.outcome.value).inc()
            audit_id = envelope.child_message_id(ce_id or patient, f"share:{org}")
            await shell.audit(
                audit_id,
                decision_audit_event(
                    query, decision, event_id=audit_id, recorded=now, observer="caremesh-share"
                ),
            )
            if not decision.permitted:
                continue
            out_headers = dict(event.headers or {})
            out_headers[envelope.H_CONSENT_DECISIONS] = ",".join(decision.consent_ids).encode()
            if org not in registry.known:
                continue  # removed while this record was being decided
            await outbox(org).send(key=event.key, value=value, headers=out_headers)
            out.inc()

    @app.task  # type: ignore[untyped-decorator]
    async def follow_organisations() -> None:
        await follow(registry, settings.kafka, settings.kafka.topic_prefix + ORGANISATIONS)

    @app.agent(clinical, name=f"{settings.kafka.topic_prefix}share")
    async def share(stream: object) -> None:
        async for event in stream.events():  # type: ignore[attr-defined]
            await shell.handle(event, share_one)
