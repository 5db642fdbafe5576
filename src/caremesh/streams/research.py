"""The research stage: clinical.fhir.v1 → research.<study>.v1, pseudonymised and consent-filtered.

For each configured study: consent for the study's purpose (opt-in or opt-out per study), then the
study's anonymizer rules with keys derived from the master key for that study only, then the
record goes to the study topic keyed by the study pseudonym, with fresh headers that carry no
source or patient identifier. A consent change that turns a study's decision to deny emits a
retraction for the patient's pseudonym to each study that had received data of that patient
(tracked in a table co-partitioned with the patient-keyed topics). Its reason is `erasure` when
the ledger event was an erasure (GDPR Art. 17, see `caremesh.erasure`), else
`consent-withdrawn`.

Before a patient's first record reaches a study, the stage writes the patient's sealed vault
record (`pseudonym.vault.seal_record`: the study → pseudonym mapping of every study that received
the patient, under the data key of the patient's current record, or a fresh one when there is
none: dead letters are sealed with it, see `caremesh.deadletters`) to `keys.patient.v1` and
waits for its acknowledgement, so every published pseudonym can be re-identified through the
audited route until the patient is erased. On an erasure it writes the key tombstone too
(idempotent with the consent API's), so a vault record written by a race just before the erasure
is shredded as well.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from caremesh import envelope, native, sharing
from caremesh.consent import ConsentPolicy, DecisionQuery
from caremesh.consent import evaluate as evaluate_consent
from caremesh.consent.audit import decision_audit_event
from caremesh.consent.model import ActorRef
from caremesh.envelope import Envelope, KeyId, PatientKey
from caremesh.erasure import (
    KEY_TOMBSTONE_TYPE,
    REASON_ERASURE,
    REASON_WITHDRAWN,
    VAULT_RECORD_TYPE,
    retraction_reason,
)
from caremesh.errors import ConfigurationError, RejectedInputError
from caremesh.policy import consent_policy
from caremesh.pseudonym.engine import Anonymizer
from caremesh.pseudonym.keys import Keyring, VaultKeys, master_key_bytes, vault_keys
from caremesh.pseudonym.presets import load_preset, preset_names
from caremesh.pseudonym.ruleset import RuleSet, load_rules
from caremesh.pseudonym.study import study_anonymizer
from caremesh.pseudonym.vault import PseudonymVault, StudyPseudonyms, seal_record
from caremesh.settings import Settings, StudySettings
from caremesh.streams.app import CaremeshApp
from caremesh.streams.ledger_access import ledger_for
from caremesh.streams.stage import Event, StageShell, raw_topic
from caremesh.topics import CLINICAL_FHIR, CONSENT_EVENTS, KEYS_PATIENT, research_topic

log = logging.getLogger(__name__)

STAGE = "research"
RETRACTION = "retraction"


@dataclass
class StudyRuntime:
    """One study's policy, anonymizer and pseudonym vault."""

    settings: StudySettings
    policy: ConsentPolicy
    anonymizer: Anonymizer
    vault: PseudonymVault
    key_id: KeyId

    @property
    def actor(self) -> ActorRef:
        """Who receives the data: the study, as a ResearchStudy reference."""
        return ActorRef(reference=f"ResearchStudy/{self.settings.id}")


def _ruleset(name: str) -> RuleSet:
    if name in preset_names():
        return load_preset(name)
    path = Path(name)
    if not path.is_file():
        raise ConfigurationError(f"study rules: {name!r} is neither a preset nor a file")
    return load_rules(path)


def master_key(settings: Settings) -> bytes:
    """The master key bytes (hex decoded when it is hex)."""
    secret = settings.pseudonym.master_key
    if secret is None:
        raise ConfigurationError("CAREMESH_PSEUDONYM__MASTER_KEY is required when studies exist")
    return master_key_bytes(secret.get_secret_value())


def stage_vault_keys(settings: Settings) -> VaultKeys:
    """The vault keys of the current master key version (they seal new vault records)."""
    return vault_keys(master_key(settings), KeyId(settings.pseudonym.key_id))


def study_runtimes(settings: Settings) -> list[StudyRuntime]:
    """Every configured study, ready to pseudonymise."""
    if not settings.studies:
        return []
    ring = Keyring.single(master_key(settings), KeyId(settings.pseudonym.key_id))
    vault = StudyPseudonyms({s.id: ring.study_keys(s.id).pseudonym_key for s in settings.studies})
    out = []
    for study in settings.studies:
        keys = ring.study_keys(study.id)
        anonymizer = study_anonymizer(study.id, ring, _ruleset(study.rules), vault=vault)
        out.append(
            StudyRuntime(
                study, consent_policy(settings.consent, study), anonymizer, vault, keys.key_id
            )
        )
    return out


def retraction_value(
    study: str, pseudonym: str, at: datetime, reason: str = REASON_WITHDRAWN
) -> bytes:
    """A retraction record: the study must delete everything it holds under `pseudonym`."""
    return orjson.dumps(
        {
            "caremeshEvent": RETRACTION,
            "study": study,
            "pseudonym": pseudonym,
            "reason": reason,
            "at": at.isoformat(),
        }
    )


def install(app: CaremeshApp, settings: Settings) -> None:
    """Register the research agents and the released-studies table on the app."""
    studies = study_runtimes(settings)
    if not studies:
        log.info("research stage: no study configured")
        return
    log.info(
        "research stage: %d studies, pseudonymisation engine %s",
        len(studies),
        native.status().describe(),
    )
    shell = StageShell(app, settings, STAGE)
    clinical = raw_topic(app, settings, CLINICAL_FHIR)
    consent_events = raw_topic(app, settings, CONSENT_EVENTS)
    topics = {
        s.settings.id: raw_topic(app, settings, research_topic(s.settings.id)) for s in studies
    }
    keys_topic = raw_topic(app, settings, KEYS_PATIENT)
    sealing = stage_vault_keys(settings)
    vault = studies[0].vault
    released = app.Table(
        f"{settings.kafka.topic_prefix}research-released",
        key_type=str,
        value_type=str,
        partitions=settings.kafka.partitions,
    )
    metrics = shell.metrics

    async def on_clinical(event: Event) -> None:
        patient = (event.key or b"").decode("utf-8", "replace")
        try:
            resource: dict[str, Any] = orjson.loads(event.value or b"")
        except orjson.JSONDecodeError:
            raise RejectedInputError("invalid-json", "clinical record is not JSON") from None
        ledger = await ledger_for(app, settings)
        await ledger.wait_caught_up(as_of=float(event.message.timestamp or 0.0))
        consents = ledger.consents(patient)
        ce_id = envelope.headers_dict(list((event.headers or {}).items())).get(envelope.H_ID, "")
        rtype = str(resource.get("resourceType", ""))
        labels = sharing.security_labels(resource)
        now = datetime.now(UTC)
        sent: set[str] = set()
        permitted: list[StudyRuntime] = []
        for study in studies:
            sid = study.settings.id
            query = DecisionQuery(
                patient=PatientKey(patient),
                purpose=study.settings.purpose,
                now=now,
                actor=study.actor,
                resource_type=rtype,
                security_labels=labels,
            )
            decision = evaluate_consent(consents, query, study.policy)
            metrics.consent_decisions.labels(
                STAGE, study.settings.purpose, decision.outcome.value
            ).inc()
            audit_id = envelope.child_message_id(ce_id or patient, f"research:{sid}")
            await shell.audit(
                audit_id,
                decision_audit_event(
                    query, decision, event_id=audit_id, recorded=now, observer="caremesh-research"
                ),
            )
            if not decision.permitted:
                continue
            permitted.append(study)
        if not permitted:
            return
        # re-read with no await before the write: the consent agent shares this row
        had = set(filter(None, (released.get(patient) or "").split(",")))
        wanted = had | {s.settings.id for s in permitted}
        if wanted != had:
            await register(patient, wanted)
        for study in permitted:
            sid = study.settings.id
            result = study.anonymizer.anonymize(resource, patient_key=patient)
            pseudonym = study.vault.pseudonym_for(sid, PatientKey(patient))
            env = Envelope(
                envelope.child_message_id(ce_id or pseudonym, sid),
                f"urn:caremesh:study:{sid}",
                envelope.fhir_event_type(rtype),
                extra={envelope.H_KEY_ID: str(result.key_id or study.key_id)},
            )
            await topics[sid].send(
                key=pseudonym.encode(),
                value=orjson.dumps(result.resource),
                headers=env.header_map(),
            )
            metrics.research_records.labels(sid, "resource").inc()
            metrics.messages_out.labels(STAGE).inc()
            sent.add(sid)
        if sent:  # re-read with no await before the write: the consent agent shares this row
            had = set(filter(None, (released.get(patient) or "").split(",")))
            if not sent <= had:
                released[patient] = ",".join(sorted(had | sent))

    async def register(patient: str, study_ids: set[str]) -> None:
        """Write the patient's sealed vault record ahead of the patient's first research record.

        Not awaited one by one (that serialised a broker round trip per new patient on the
        event loop every stage shares): the record goes through the same producer before the
        research record, and Faust flushes the producer before it commits the input offset, so
        a crash before the acknowledgement processes the event again.
        """
        key = PatientKey(patient)
        pseudonyms = {sid: vault.pseudonym_for(sid, key) for sid in sorted(study_ids)}
        env = Envelope(
            str(uuid.uuid4()),
            "urn:caremesh:stage:research",
            VAULT_RECORD_TYPE,
            content_type="application/json",
        )
        data_key = await shell.current_data_key(key)  # keep it: dead letters are sealed with it
        sent = await keys_topic.send(
            key=patient.encode(),
            value=seal_record(sealing, key, pseudonyms, data_key=data_key),
            headers=env.header_map(),
        )
        asyncio.ensure_future(sent).add_done_callback(_vault_write_failed)

    async def on_consent(event: Event) -> None:
        patient = (event.key or b"").decode("utf-8", "replace")
        had = set(filter(None, (released.get(patient) or "").split(",")))
        if not had:
            return
        ledger = await ledger_for(app, settings)
        await ledger.wait_caught_up(as_of=float(event.message.timestamp or 0.0))
        consents = ledger.consents(patient)
        now = datetime.now(UTC)
        retracted: set[str] = set()
        erased = False
        for study in studies:
            sid = study.settings.id
            if sid not in had:
                continue
            query = DecisionQuery(
                patient=PatientKey(patient),
                purpose=study.settings.purpose,
                now=now,
                actor=study.actor,
            )
            decision = evaluate_consent(consents, query, study.policy)
            if decision.permitted:
                continue
            pseudonym = study.vault.pseudonym_for(sid, PatientKey(patient))
            env = Envelope(
                envelope.child_message_id(pseudonym, f"retraction:{event.message.offset}"),
                f"urn:caremesh:study:{sid}",
                "org.caremesh.research.retraction",
                content_type="application/json",
            )
            reason = retraction_reason(decision)
            erased = erased or reason == REASON_ERASURE
            await topics[sid].send(
                key=pseudonym.encode(),
                value=retraction_value(sid, pseudonym, now, reason),
                headers=env.header_map(),
            )
            metrics.research_records.labels(sid, RETRACTION).inc()
            retracted.add(sid)
        if retracted:
            had = set(filter(None, (released.get(patient) or "").split(",")))
            released[patient] = ",".join(sorted(had - retracted))
        if erased:
            env = Envelope(
                str(uuid.uuid4()),
                "urn:caremesh:stage:research",
                KEY_TOMBSTONE_TYPE,
                content_type="application/octet-stream",
            )
            await (
                await keys_topic.send(key=patient.encode(), value=None, headers=env.header_map())
            )

    @app.agent(clinical, name=f"{settings.kafka.topic_prefix}research")
    async def research(stream: object) -> None:
        async for event in stream.events():  # type: ignore[attr-defined]
            await shell.handle(event, on_clinical)

    @app.agent(consent_events, name=f"{settings.kafka.topic_prefix}research-retractions")
    async def retractions(stream: object) -> None:
        async for event in stream.events():  # type: ignore[attr-defined]
            await shell.handle(event, on_consent)


def _vault_write_failed(future: Any) -> None:
    """Log (codes only) a vault record the broker did not take; the pseudonym stays valid."""
    if not future.cancelled() and future.exception() is not None:
        log.error("vault record not written: %s", type(future.exception()).__name__)
