"""What every stage shell shares: raw topics, the dead-letter writer, retries, per-event outcome.

Faust acks a message whose agent raised, so a stage never lets an exception escape: a message
that can never be processed goes to `deadletter.v1` (original key and bytes, with an error code,
the stage and its coordinates in headers; never payload in the reason), and a transient failure
(broker, consent state not ready) is retried until it succeeds, never dead-lettered (DESIGN §4).
Stages read topics keyed by the patient key, so with a master key configured a dead letter's
value is sealed under the patient's vault data key and its key replaced by the key id
(`caremesh.deadletters`): the erasure tombstone shreds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
import orjson
from confluent_kafka import KafkaException

from caremesh import envelope
from caremesh.consent.model import ERASURE_ID
from caremesh.deadletters import Origin, PatientKeyStore, protect
from caremesh.envelope import KeyId, PatientKey
from caremesh.erasure import VAULT_RECORD_TYPE
from caremesh.errors import (
    ConfigurationError,
    ConsentNotReadyError,
    KafkaUnavailableError,
    RejectedInputError,
)
from caremesh.metrics import Metrics
from caremesh.pseudonym.keys import master_key_bytes, vault_keys
from caremesh.settings import Settings
from caremesh.streams.app import CaremeshApp
from caremesh.streams.batch import deadletter_headers
from caremesh.streams.ledger_access import ledger_for
from caremesh.topics import AUDIT, DEADLETTER, KEYS_PATIENT

log = logging.getLogger(__name__)

Event = faust.EventT[Any]

TRANSIENT = (
    KafkaUnavailableError,
    ConsentNotReadyError,
    asyncio.TimeoutError,
    ConnectionError,
    KafkaException,  # a confluent client call the broker did not answer (a pause, a failover)
)
"""Failures retried until they pass: a record is never dead-lettered because the broker was
away (a permanent one, such as a missing ACL, shows as repeated warnings, not as lost data)."""
MAX_BACKOFF = 10.0


def raw_topic(app: CaremeshApp, settings: Settings, name: str) -> faust.TopicT:
    """A catalogue topic with bytes keys and values (no Faust serialisation)."""
    return app.topic(
        settings.kafka.topic_prefix + name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )


def text_headers(event: Event) -> dict[str, str]:
    """The event's Kafka headers as text."""
    raw: Mapping[str, Any] = event.headers or {}
    return {
        k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for k, v in raw.items()
    }


_KEY_STORES: dict[str, PatientKeyStore] = {}
"""One `keys.patient.v1` fold per process (the stages of one worker share it)."""


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


class InjectedFaultError(Exception):
    """The test-only fault of `worker.fault_marker` (never raised when it is unset)."""


class StageShell:
    """Runs one stage's handler per event with dead-lettering, retries and metrics."""

    def __init__(self, app: CaremeshApp, settings: Settings, stage: str) -> None:
        self.app = app
        self.stage = stage
        self.metrics: Metrics = app.caremesh_metrics
        self.deadletter = raw_topic(app, settings, DEADLETTER)
        self.audit_topic = raw_topic(app, settings, AUDIT)
        self.keys_topic = raw_topic(app, settings, KEYS_PATIENT)
        self.settings = settings
        self.key_store = patient_key_store(settings)
        if self.key_store is None:
            log.warning("stage %s: no master key, dead letters are written in clear", stage)
        marker = settings.worker.fault_marker
        self.fault_marker = marker.encode() if marker else None

    async def audit(self, event_id: str, audit_event: Mapping[str, Any]) -> None:
        """Write one FHIR AuditEvent to audit.v1, keyed by its (stable) id."""
        env = envelope.Envelope(
            event_id, f"urn:caremesh:stage:{self.stage}", envelope.fhir_event_type("AuditEvent")
        )
        await self.audit_topic.send(
            key=event_id.encode(), value=orjson.dumps(audit_event), headers=env.header_map()
        )

    async def dead_letter(self, event: Event, code: str, reason: str) -> None:
        """Write the original record to deadletter.v1 with value-free reason headers."""
        msg = event.message
        headers = dict(event.headers or {})
        reasons = deadletter_headers(
            code,
            self.stage,
            reason,
            topic=str(msg.topic),
            partition=msg.partition,
            offset=msg.offset,
        )
        headers.update({k: v.encode() if isinstance(v, str) else (v or b"") for k, v in reasons})
        origin = Origin(str(msg.topic), msg.partition, msg.offset)
        patient = PatientKey((event.key or b"").decode("utf-8", "replace"))
        backoff = 0.1
        while True:
            try:
                sealed = await protect(
                    self.key_store,
                    patient,
                    event.key,
                    event.value,
                    origin,
                    erased=lambda p: self._erased(p, float(msg.timestamp or 0.0)),
                    write=self._write_key_record,
                )
                break
            except TRANSIENT as exc:
                log.warning("dead letter key not ready in %s (%s)", self.stage, type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        headers.update({k: v.encode() for k, v in sealed.headers})
        value = sealed.value if sealed.key is not None or sealed.value is not None else b""
        await self.deadletter.send(key=sealed.key, value=value, headers=headers)
        self.metrics.rejected.labels(self.stage, code).inc()
        log.info(
            "dead-lettered: stage=%s code=%s topic=%s partition=%s offset=%s",
            self.stage,
            code,
            msg.topic,
            msg.partition,
            msg.offset,
        )

    async def _erased(self, patient: PatientKey, as_of: float) -> bool:
        ledger = await ledger_for(self.app, self.settings)
        await ledger.wait_caught_up(as_of=as_of)
        return any(c.id == ERASURE_ID for c in ledger.consents(patient))

    async def _write_key_record(self, key: bytes, value: bytes) -> None:
        env = envelope.Envelope(
            str(uuid.uuid4()),
            f"urn:caremesh:stage:{self.stage}",
            VAULT_RECORD_TYPE,
            content_type="application/json",
        )
        await (await self.keys_topic.send(key=key, value=value, headers=env.header_map()))

    async def current_data_key(self, patient: PatientKey) -> bytes | None:
        """The data key of the patient's vault record (None: none, or no master key), so a
        re-sealed record keeps it and the dead letters sealed under it stay readable.

        Runs for every patient new to a study: after the first call for a key partition it
        costs no broker round trip (`PatientKeyStore.catch_up_fetched`).
        """
        if self.key_store is None:
            return None
        store = self.key_store
        if store.partition_ready(patient):
            store.catch_up_fetched(patient)
        else:
            await asyncio.to_thread(store.catch_up_fetched, patient)
        return store.data_key(patient)

    async def handle(self, event: Event, handler: Callable[[Event], Awaitable[None]]) -> None:
        """Run `handler` on one event until it has an outcome: output, dead letter, or retry."""
        self.metrics.messages_in.labels(self.stage).inc()
        backoff = 0.1
        while True:
            started = time.perf_counter()
            try:
                if self.fault_marker is not None and self.fault_marker in (event.value or b""):
                    raise InjectedFaultError(self.stage)
                await handler(event)
            except RejectedInputError as exc:
                await self.dead_letter(event, exc.code, exc.detail)
            except TRANSIENT as exc:
                self.metrics.retries.labels(self.stage).inc()
                log.warning(
                    "transient failure in %s (%s); retrying in %.1fs",
                    self.stage,
                    type(exc).__name__,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            except Exception as exc:  # noqa: BLE001 - nothing may be acked without an outcome
                # The traceback's frames only: an exception's text may quote data.
                log.error(
                    "stage %s failed on topic=%s partition=%s offset=%s (%s)\n%s",
                    self.stage,
                    event.message.topic,
                    event.message.partition,
                    event.message.offset,
                    type(exc).__name__,
                    "".join(traceback.format_tb(exc.__traceback__)),
                )
                await self.dead_letter(
                    event, "stage-error", f"{self.stage} raised {type(exc).__name__}"
                )
            self.metrics.stage_duration.labels(self.stage).observe(time.perf_counter() - started)
            return
