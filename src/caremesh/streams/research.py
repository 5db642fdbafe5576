"""The research stage: clinical.fhir.v1 → research.<study>.v1, pseudonymised and consent-filtered.

For each configured study: consent for the study's purpose (opt-in or opt-out per study), then the
study's anonymizer rules with keys derived from the master key for that study only, then the
record goes to the study topic keyed by the study pseudonym, with fresh headers that carry no
source or patient identifier. A consent change that turns a study's decision to deny emits a
retraction for the patient's pseudonym to each study that had received data of that patient
(tracked in a state topic co-partitioned with the patient-keyed topics). One batch-runner
consumer (`streams/patient_stage.py`) reads the clinical topic and the consent ledger's topic,
so one thread owns a patient's released studies. Its reason is `erasure` when
the ledger event was an erasure (GDPR Art. 17, see `caremesh.consent.erasure`), else
`consent-withdrawn`.

Before a patient's first record reaches a study, the stage writes the patient's sealed vault
record (`pseudonym.vault.seal_record`: the study → pseudonym mapping of every study that received
the patient, under the data key of the patient's current record, or a fresh one when there is
none: dead letters are sealed with it, see `caremesh.tables.deadletters`) to `keys.patient.v1` and
the runner has it acknowledged with the research records, before the released studies are
written and the input committed, so every published pseudonym can be re-identified through the
audited route until the patient is erased. On an erasure it writes the key tombstone too
(idempotent with the consent API's), after the retractions, so a vault record written by a race
just before the erasure is shredded as well.

The handlers are module-level functions of the stage's context (`ResearchContext`) and a
`Record`, unit-tested without a broker (tests/unit/streams/test_research_stage.py).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from caremesh import envelope
from caremesh.consent import ConsentPolicy, DecisionQuery
from caremesh.consent import evaluate as evaluate_consent
from caremesh.consent.erasure import (
    KEY_TOMBSTONE_TYPE,
    REASON_ERASURE,
    VAULT_RECORD_TYPE,
    retraction_reason,
)
from caremesh.consent.model import ActorRef
from caremesh.consent.policy import consent_policy
from caremesh.envelope import Envelope, KeyId, PatientKey
from caremesh.errors import ConfigurationError
from caremesh.kafka.io import Output
from caremesh.metrics import Metrics
from caremesh.pseudonym import native
from caremesh.pseudonym.engine import Anonymizer
from caremesh.pseudonym.keys import Keyring, VaultKeys, master_key_bytes, vault_keys
from caremesh.pseudonym.presets import load_preset, preset_names
from caremesh.pseudonym.ruleset import RuleSet, load_rules
from caremesh.pseudonym.study import study_anonymizer
from caremesh.pseudonym.vault import PseudonymVault, StudyPseudonyms, seal_record
from caremesh.research.records import RETRACTION, retraction_value
from caremesh.settings import PseudonymSettings, Settings, StudySettings
from caremesh.sharing import care_team as sharing
from caremesh.streams.batch import WorkerApp
from caremesh.streams.patient_stage import ConsentGate, PatientStage
from caremesh.streams.record import Record
from caremesh.tables.state import PartitionState
from caremesh.topics import CLINICAL_FHIR, CONSENT_EVENTS, KEYS_PATIENT, research_topic

log = logging.getLogger(__name__)

STAGE = "research"


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


def master_key(pseudonym: PseudonymSettings) -> bytes:
    """The master key bytes (hex decoded when it is hex)."""
    secret = pseudonym.master_key
    if secret is None:
        raise ConfigurationError("CAREMESH_PSEUDONYM__MASTER_KEY is required when studies exist")
    return master_key_bytes(secret.get_secret_value())


def stage_vault_keys(pseudonym: PseudonymSettings) -> VaultKeys:
    """The vault keys of the current master key version (they seal new vault records)."""
    return vault_keys(master_key(pseudonym), KeyId(pseudonym.key_id))


def study_runtimes(settings: Settings) -> list[StudyRuntime]:
    """Every configured study, ready to pseudonymise."""
    if not settings.studies:
        return []
    ring = Keyring.single(master_key(settings.pseudonym), KeyId(settings.pseudonym.key_id))
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


@dataclass(frozen=True, slots=True)
class ResearchContext:
    """What the research handlers work with: the studies, their topics, the released studies
    per patient, the vault keys, consent."""

    studies: Sequence[StudyRuntime]
    topics: Mapping[str, str]
    """Study id → its (prefixed) research topic."""
    keys_topic: str
    sealing: VaultKeys
    released: PartitionState
    gate: ConsentGate
    data_key: Callable[[PatientKey], bytes | None]
    """The data key of the patient's current vault record (kept when it is re-sealed)."""
    wait_folded: Callable[[int, int], None]
    """Wait until the consent ledger has folded (partition, offset)."""
    metrics: Metrics


def _released_to(ctx: ResearchContext, partition: int, patient: str) -> set[str]:
    raw = ctx.released.get(partition, patient.encode()) or b""
    return set(filter(None, raw.decode().split(",")))


def _register(ctx: ResearchContext, patient: str, study_ids: set[str], ce_id: str) -> Output:
    """The patient's sealed vault record, written ahead of the patient's first research
    record (the runner has both acknowledged before it stores `released` and commits)."""
    key = PatientKey(patient)
    vault = ctx.studies[0].vault
    pseudonyms = {sid: vault.pseudonym_for(sid, key) for sid in sorted(study_ids)}
    env = Envelope(
        envelope.child_message_id(ce_id or str(uuid.uuid4()), "vault"),
        "urn:caremesh:stage:research",
        VAULT_RECORD_TYPE,
        content_type="application/json",
    )
    data_key = ctx.data_key(key)  # keep it: dead letters are sealed with it
    return Output(
        ctx.keys_topic,
        patient.encode(),
        seal_record(ctx.sealing, key, pseudonyms, data_key=data_key),
        env.headers(),
    )


def on_clinical(ctx: ResearchContext, rec: Record) -> list[Output]:
    """A clinical record to every study whose consent decision permits it, pseudonymised."""
    patient = rec.patient
    partition = rec.partition
    resource = rec.clinical
    consents = ctx.gate.consents(patient)
    ce_id = rec.text_headers.get(envelope.H_ID, "")
    rtype = str(resource.get("resourceType", ""))
    labels = sharing.security_labels(resource)
    now = datetime.now(UTC)
    outputs: list[Output] = []
    permitted: list[StudyRuntime] = []
    for study in ctx.studies:
        sid = study.settings.id
        query = DecisionQuery(
            patient=PatientKey(patient),
            purpose=study.settings.purpose,
            now=now,
            actor=study.actor,
            resource_type=rtype,
            security_labels=labels,
        )
        audit_id = envelope.child_message_id(ce_id or patient, f"research:{sid}")
        decision, audit = ctx.gate.decide(consents, query, study.policy, audit_id, now)
        outputs.append(audit)
        if decision.permitted:
            permitted.append(study)
    if not permitted:
        return outputs
    had = _released_to(ctx, partition, patient)
    wanted = had | {s.settings.id for s in permitted}
    if wanted != had:
        outputs.append(_register(ctx, patient, wanted, ce_id))
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
        outputs.append(
            Output(
                ctx.topics[sid], pseudonym.encode(), orjson.dumps(result.resource), env.headers()
            )
        )
        ctx.metrics.research_records.labels(sid, "resource").inc()
        ctx.metrics.messages_out.labels(STAGE).inc()
    if wanted != had:
        outputs.append(
            ctx.released.put(partition, patient.encode(), ",".join(sorted(wanted)).encode())
        )
    return outputs


def on_consent(ctx: ResearchContext, rec: Record) -> list[Output]:
    """A consent event: a retraction to each released study the patient's consent now denies
    (and the key tombstone after an erasure)."""
    patient = rec.patient
    partition = rec.partition
    had = _released_to(ctx, partition, patient)
    if not had:
        return []
    # the batch waited for the ledger as of this record's timestamp, which is set before
    # the broker appends it: wait for the record itself to be folded
    ctx.wait_folded(partition, rec.offset)
    consents = ctx.gate.consents(patient)
    now = datetime.now(UTC)
    outputs: list[Output] = []
    retracted: set[str] = set()
    erased = False
    for study in ctx.studies:
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
            envelope.child_message_id(pseudonym, f"retraction:{rec.offset}"),
            f"urn:caremesh:study:{sid}",
            "org.caremesh.research.retraction",
            content_type="application/json",
        )
        reason = retraction_reason(decision)
        erased = erased or reason == REASON_ERASURE
        outputs.append(
            Output(
                ctx.topics[sid],
                pseudonym.encode(),
                retraction_value(sid, pseudonym, now, reason),
                env.headers(),
            )
        )
        ctx.metrics.research_records.labels(sid, RETRACTION).inc()
        retracted.add(sid)
    if erased:
        env = Envelope(
            str(uuid.uuid4()),
            "urn:caremesh:stage:research",
            KEY_TOMBSTONE_TYPE,
            content_type="application/octet-stream",
        )
        outputs.append(Output(ctx.keys_topic, patient.encode(), None, env.headers()))
    if retracted:
        left = ",".join(sorted(had - retracted)).encode()
        outputs.append(ctx.released.put(partition, patient.encode(), left or None))
    return outputs


def handle(ctx: ResearchContext, rec: Record) -> list[Output]:
    """One record of the stage's sources."""
    return on_consent(ctx, rec) if rec.topic == CONSENT_EVENTS else on_clinical(ctx, rec)


def install(app: WorkerApp, settings: Settings) -> None:
    """Register the research stage (clinical records and consent events) on the worker."""
    studies = study_runtimes(settings)
    if not studies:
        log.info("research stage: no study configured")
        return
    log.info(
        "research stage: %d studies, pseudonymisation engine %s",
        len(studies),
        native.status().describe(),
    )
    stage = PatientStage(settings, STAGE, app.metrics)
    prefix = settings.kafka.topic_prefix
    released = stage.state("released")
    ctx = ResearchContext(
        studies=studies,
        topics={s.settings.id: prefix + research_topic(s.settings.id) for s in studies},
        keys_topic=prefix + KEYS_PATIENT,
        sealing=stage_vault_keys(settings.pseudonym),
        released=released,
        gate=stage,
        data_key=stage.current_data_key,
        # the ledger follower is made when the runner prepares, not at install
        wait_folded=lambda partition, offset: stage.ledger.wait_folded(partition, offset),  # noqa: PLW0108
        metrics=stage.metrics,
    )
    app.stages.append(
        stage.runner(
            sources=[CLINICAL_FHIR, CONSENT_EVENTS],
            handler=functools.partial(handle, ctx),
            states=[released],
            on_batch_start=stage.fold_keys,
            prepare=lambda: warm_up(studies),
        )
    )


def warm_up(studies: list[StudyRuntime]) -> None:
    """Pseudonymise a few synthetic resources of common types with every study's rules, so
    the element models and rule paths the engine loads on first use are loaded before the
    first records (as the validate stage does for its models)."""
    for resource in _warm_up_resources():
        for study in studies:
            with contextlib.suppress(Exception):
                study.anonymizer.anonymize(resource, patient_key="warm-up")


def _warm_up_resources() -> list[dict[str, Any]]:
    subject = {"reference": "Patient/warm-up", "display": "Warm Up"}
    coding = {"coding": [{"system": "http://loinc.org", "code": "0000-0", "display": "x"}]}
    when = "2026-01-01T00:00:00Z"
    common = {
        "id": "warm-up",
        "meta": {"lastUpdated": when, "security": [{"code": "N"}]},
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.10", "value": "000"}],
        "text": {"status": "generated", "div": "<div>x</div>"},
        "extension": [{"url": "http://example.org/x", "valueString": "x"}],
    }
    person = {
        "name": [{"family": "Up", "given": ["Warm"]}],
        "telecom": [{"system": "phone", "value": "0"}],
        "address": [{"line": ["1 rue"], "city": "X", "postalCode": "00000", "country": "FR"}],
        "birthDate": "1950-01-01",
        "gender": "other",
    }
    return [
        {"resourceType": "Patient", **common, **person},
        {"resourceType": "Practitioner", **common, **person},
        {
            "resourceType": "Observation",
            **common,
            "status": "final",
            "category": [coding],
            "code": coding,
            "subject": subject,
            "encounter": {"reference": "Encounter/warm-up"},
            "effectiveDateTime": when,
            "issued": when,
            "performer": [{"reference": "Organization/warm-up"}],
            "valueQuantity": {"value": 1, "unit": "%", "system": "http://unitsofmeasure.org"},
            "note": [{"text": "x"}],
            "component": [{"code": coding, "valueQuantity": {"value": 1}}],
        },
        {
            "resourceType": "Encounter",
            **common,
            "status": "finished",
            "class": {"code": "AMB"},
            "type": [coding],
            "subject": subject,
            "period": {"start": when, "end": when},
            "serviceProvider": {"reference": "Organization/warm-up"},
            "participant": [{"individual": {"reference": "Practitioner/warm-up"}}],
        },
        {
            "resourceType": "Condition",
            **common,
            "clinicalStatus": coding,
            "code": coding,
            "subject": subject,
            "onsetDateTime": when,
            "recordedDate": when,
            "note": [{"text": "x"}],
        },
        {
            "resourceType": "CareTeam",
            **common,
            "status": "active",
            "subject": subject,
            "participant": [{"member": {"reference": "Organization/warm-up"}}],
        },
        {
            "resourceType": "MedicationRequest",
            **common,
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": coding,
            "subject": subject,
            "authoredOn": when,
            "dosageInstruction": [{"text": "x"}],
        },
        {
            "resourceType": "Procedure",
            **common,
            "status": "completed",
            "code": coding,
            "subject": subject,
            "performedDateTime": when,
        },
    ]
