"""What the patient-keyed stages (share, pathways, research) share on the batch runner.

Each runs as a `BatchRunner` (`streams/batch.py`) in its own consumer group, `<app id>-<stage>`,
reading topics keyed by the patient key. This module gives them:

- the process's consent ledger follower, caught up once per batch *as of* the batch's newest
  record (so a withdrawal acknowledged before any record of the batch arrived applies to it, and
  nothing is decided during recovery: a ledger that is not there is a transient failure, retried);
- their state topics, `<prefix><app id>-<stage>-<name>`, compacted and partitioned like the
  patient-keyed topics;
- audit records for `audit.v1`;
- dead letters sealed under the patient's vault data key (`caremesh.tables.deadletters`), so the
  erasure tombstone shreds them, or written with neither key nor value when the patient is erased;
- their records as plain data (`caremesh.streams.record.Record`): the runner turns each consumed
  message into one, and decodes a clinical.fhir.v1 record's resource once for every stage (a
  record that is not a FHIR resource goes to the dead letters before any stage code runs). Stage
  handlers are module-level functions of a context and a `Record`, unit-tested without a broker.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import orjson

from caremesh import envelope
from caremesh.audit.events import decision_audit_event
from caremesh.consent import ConsentPolicy, Decision, DecisionQuery, evaluate
from caremesh.consent.erasure import VAULT_RECORD_TYPE
from caremesh.consent.model import ERASURE_ID, Consent
from caremesh.envelope import KeyId, PatientKey
from caremesh.errors import ConfigurationError
from caremesh.kafka import config as kafka_config
from caremesh.kafka.admin import ensure_compacted
from caremesh.kafka.client import Message, Producer
from caremesh.kafka.io import Output, produce_and_wait
from caremesh.metrics import Metrics
from caremesh.pseudonym.keys import master_key_bytes, vault_keys
from caremesh.settings import Settings
from caremesh.streams.batch import BatchRunner
from caremesh.streams.record import RecordHandler, patient_of, record_time, to_record
from caremesh.tables.consent_ledger import LedgerFollower, ledger_follower
from caremesh.tables.deadletters import Origin, PatientKeyStore, protect
from caremesh.tables.state import PartitionState
from caremesh.topics import AUDIT, DEADLETTER, KEYS_PATIENT

log = logging.getLogger(__name__)

_KEY_STORES: dict[str, PatientKeyStore] = {}
"""One `keys.patient.v1` fold per process (the stages of one worker share it; it locks)."""


def patient_key_store(settings: Settings) -> PatientKeyStore | None:
    """The process's patient data-key store, or None when no master key is configured."""
    secret = settings.pseudonym.master_key
    if secret is None:
        return None
    topic = settings.kafka.topic_prefix + KEYS_PATIENT
    store = _KEY_STORES.get(topic)
    if store is None:
        try:
            master = master_key_bytes(secret.get_secret_value())
        except ConfigurationError:
            log.warning("dead letters stay in clear: the master key is not usable")
            return None
        key_id = KeyId(settings.pseudonym.key_id)
        store = PatientKeyStore(settings.kafka, topic, {key_id: vault_keys(master, key_id)}, key_id)
        _KEY_STORES[topic] = store
    return store


class ConsentGate(Protocol):
    """What a stage handler asks of consent: the patient's consents, and an audited decision
    (`PatientStage` is one; a unit test builds one over a fixed set of consents)."""

    def consents(self, patient: str) -> tuple[Consent, ...]:
        """The patient's consents as folded so far."""
        ...

    def decide(
        self,
        consents: Sequence[Consent],
        query: DecisionQuery,
        policy: ConsentPolicy,
        audit_id: str,
        now: datetime,
    ) -> tuple[Decision, Output]:
        """A consent decision and its AuditEvent for audit.v1."""
        ...


class PatientStage:
    """One patient-keyed stage's ledger, state topics, audit and dead-letter sealing."""

    def __init__(self, settings: Settings, stage: str, metrics: Metrics) -> None:
        self.settings = settings
        self.stage = stage
        self.metrics = metrics
        prefix = settings.kafka.topic_prefix
        self.prefix = prefix
        self.audit_topic = prefix + AUDIT
        self.keys_topic = prefix + KEYS_PATIENT
        self.key_store = patient_key_store(settings)
        if self.key_store is None:
            log.warning("stage %s: no master key, dead letters are written in clear", stage)
        self._ledger: LedgerFollower | None = None
        self._key_producer: Producer | None = None

    @property
    def ledger(self) -> LedgerFollower:
        """The consent ledger follower (started by the runner's `prepare`)."""
        if self._ledger is None:
            self._ledger = ledger_follower(self.settings.kafka)
        return self._ledger

    def state(self, name: str) -> PartitionState:
        """A per-partition state of this stage, `<prefix><app id>-<stage>-<name>`."""
        app_id = self.settings.worker.app_id
        return PartitionState(self.settings.kafka, f"{self.prefix}{app_id}-{self.stage}-{name}")

    def consents(self, patient: str) -> tuple[Consent, ...]:
        """The patient's consents, as folded so far (the batch waited for the ledger)."""
        return self.ledger.consents(patient)

    def wait_for_ledger(self, batch: Sequence[Message]) -> None:
        """Catch the consent state up with the ledger as of the batch's newest record."""
        self.ledger.wait_caught_up(as_of=max(record_time(m) for m in batch))

    def decide(
        self,
        consents: Sequence[Consent],
        query: DecisionQuery,
        policy: ConsentPolicy,
        audit_id: str,
        now: datetime,
    ) -> tuple[Decision, Output]:
        """A consent decision, counted in the metrics, and its AuditEvent for audit.v1."""
        decision = evaluate(consents, query, policy)
        self.metrics.consent_decisions.labels(
            self.stage, query.purpose, decision.outcome.value
        ).inc()
        observer = f"caremesh-{self.stage}"
        event = decision_audit_event(
            query, decision, event_id=audit_id, recorded=now, observer=observer
        )
        return decision, self.audit(audit_id, event)

    def audit(self, event_id: str, audit_event: Mapping[str, Any]) -> Output:
        """One FHIR AuditEvent for audit.v1, keyed by its (stable) id."""
        env = envelope.Envelope(
            event_id, f"urn:caremesh:stage:{self.stage}", envelope.fhir_event_type("AuditEvent")
        )
        return Output(self.audit_topic, event_id.encode(), orjson.dumps(audit_event), env.headers())

    def current_data_key(self, patient: PatientKey) -> bytes | None:
        """The data key of the patient's vault record (None: none, or no master key), so a
        re-sealed record keeps it and the dead letters sealed under it stay readable.

        After the first call for a key partition it costs no broker round trip; what the
        store's fetcher brought is folded once per batch (`fold_keys`)."""
        if self.key_store is None:
            return None
        self.key_store.catch_up_fetched(patient, fold=False)
        return self.key_store.data_key(patient)

    def fold_keys(self, batch: Sequence[Message]) -> None:
        """Before a batch: fold the key records fetched since the last one (see
        `current_data_key`)."""
        if self.key_store is not None:
            self.key_store.fold_fetched()

    def seal(self, msg: Message) -> tuple[bytes | None, bytes | None, list[tuple[str, str]]]:
        """How to write the dead letter of `msg` (see `caremesh.tables.deadletters`)."""
        patient = PatientKey(patient_of(msg))
        as_of = record_time(msg)

        def erased(p: PatientKey) -> bool:
            self.ledger.wait_caught_up(as_of=as_of)
            return any(c.id == ERASURE_ID for c in self.ledger.consents(p))

        sealed = protect(
            self.key_store,
            patient,
            msg.key(),
            msg.value(),
            Origin(msg.topic() or "", msg.partition() or 0, msg.offset() or 0),
            erased=erased,
            write=self._write_key_record,
        )
        value = sealed.value if sealed.key is not None or sealed.value is not None else b""
        return sealed.key, value, list(sealed.headers)

    def _write_key_record(self, key: bytes, value: bytes) -> None:
        """Write a vault record to keys.patient.v1 and wait for the broker's acknowledgement."""
        if self._key_producer is None:
            self._key_producer = Producer(kafka_config.producer_config(self.settings.kafka))
        env = envelope.Envelope(
            str(uuid.uuid4()),
            f"urn:caremesh:stage:{self.stage}",
            VAULT_RECORD_TYPE,
            content_type="application/json",
        )
        record = Output(self.keys_topic, key, value, env.headers())
        produce_and_wait(self._key_producer, [record], "vault record")

    def runner(
        self,
        *,
        sources: Sequence[str],
        handler: RecordHandler,
        states: Sequence[PartitionState] = (),
        on_batch_start: Callable[[list[Message]], None] | None = None,
        on_tick: Callable[[], list[Output]] | None = None,
        tick_interval: float = 60.0,
        prepare: Callable[[], None] | None = None,
    ) -> BatchRunner:
        """The stage's batch runner: its group, its states created and loaded, the ledger
        followed and caught up before each batch, each message given to `handler` as a `Record`,
        dead letters sealed."""
        settings = self.settings
        prefix = self.prefix

        def handle(msg: Message) -> list[Output]:
            return handler(to_record(msg, prefix))

        prepared: list[bool] = []

        def prepare_all() -> None:
            if prepare is not None and not prepared:  # once: prepare_all may be retried
                prepare()
                prepared.append(True)
            for state in states:
                ensure_compacted(
                    settings.kafka,
                    state.changelog,
                    settings.kafka.partitions,
                    settings.kafka.replication_factor,
                )
            self.ledger.start()

        def before_batch(batch: list[Message]) -> None:
            self.wait_for_ledger(batch)
            if on_batch_start is not None:
                on_batch_start(batch)

        return BatchRunner(
            stage=self.stage,
            bootstrap=settings.kafka,
            group_id=f"{settings.worker.app_id}-{self.stage}",
            source=[self.prefix + s for s in sources],
            handler=handle,
            metrics=self.metrics,
            deadletter_topic=self.prefix + DEADLETTER,
            states=states,
            on_batch_start=before_batch,
            prepare=prepare_all,
            on_tick=on_tick,
            tick_interval=tick_interval,
            seal=self.seal,
            fault_marker=settings.worker.fault_marker,
        )
