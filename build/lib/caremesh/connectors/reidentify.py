"""Re-identification: study pseudonym → patient key, for a named re-identifier, always audited.

Contract (DESIGN §5, §6, §9), mounted on the consent API:

- `POST /ResearchStudy/{study}/$reidentify` with a JSON body `{"pseudonym": "<64 hex>",
  "reason": "<why, free text>"}` (in the body, never the URL, so no access log can hold it).
- It needs `Authorization: Bearer` with a token of `settings.consent_api.reidentifiers` (a role
  of its own: a consent administrator's token alone gets 403, no or an unknown token 401); in
  both cases nothing is read and nothing is disclosed.
- The vault (`pseudonym.vault.VaultIndex` over `keys.patient.v1`) is first brought up to the
  topic's end offsets as of the request, so an erasure acknowledged before the request applies.
  A pseudonym never issued, or whose patient was erased (the data key is tombstoned), is 404
  `not-found`: both look the same on purpose.
- A disclosure is answered 200 `{"study", "pseudonym", "patient", "auditEvent"}` only after an
  AuditEvent (DICOM 110110 Patient Record, action R, agent = the re-identifier, the reason, the
  study and both identities as entities) was acknowledged on `audit.v1`; else 503 and nothing
  is disclosed. Log lines carry the re-identifier's name, the study and codes, never the
  pseudonym, the patient key or the reason.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from caremesh import topics
from caremesh.audit.events import reidentification_audit_event
from caremesh.connectors.http.server import TokenTable, outcome_response, unauthorized
from caremesh.envelope import Envelope, KeyId, fhir_event_type
from caremesh.errors import ConfigurationError, KafkaUnavailableError, RefusedRequestError
from caremesh.kafka.client import Consumer, KafkaException, TopicPartition
from caremesh.kafka.config import consumer_config
from caremesh.kafka.io import AsyncProducer, Output
from caremesh.kafka.reading import read_to_end_offsets
from caremesh.metrics import Metrics
from caremesh.pseudonym.keys import master_key_bytes, vault_keys
from caremesh.pseudonym.vault import VaultIndex
from caremesh.settings import Settings
from caremesh.topics import VAULT_READER_GROUP

log = logging.getLogger(__name__)

COMPONENT: Final = "reidentify"
CE_SOURCE: Final = "urn:caremesh:consent-api"
MAX_REASON_CHARS: Final = 1000
_PSEUDONYM = re.compile(r"[0-9a-f]{64}")


class VaultReader:
    """`keys.patient.v1` folded into a `VaultIndex`, brought up to date on demand.

    `catch_up` reads from where it stopped to the end offsets read at its start, with a
    short-lived group-less consumer (no commit), so the process holds no idle connection.
    """

    def __init__(self, settings: Settings, index: VaultIndex, timeout: float = 30.0) -> None:
        self._settings = settings
        self.topic = settings.kafka.topic_prefix + topics.KEYS_PATIENT
        self.index = index
        self.timeout = timeout
        self._positions: dict[int, int] = {}
        self._lock = threading.Lock()

    def catch_up(self) -> None:
        """Fold every record written before this call; KafkaUnavailableError when it cannot."""
        with self._lock:
            config = consumer_config(
                self._settings.kafka,
                VAULT_READER_GROUP,
                **{"enable.auto.commit": False, "enable.partition.eof": True},
            )
            consumer = Consumer(config)
            try:
                self._read(consumer)
            except KafkaException:
                raise KafkaUnavailableError(f"vault topic {self.topic} not readable") from None
            finally:
                consumer.close()

    def _read(self, consumer: Consumer) -> None:
        meta = consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if meta is None or meta.error is not None:
            raise KafkaUnavailableError(f"vault topic {self.topic} has no partitions")
        starts = [
            TopicPartition(self.topic, p, self._positions.get(p, 0))
            for p in sorted(meta.partitions)
        ]
        for msg in read_to_end_offsets(consumer, starts, self.timeout, "vault topic"):
            self.index.apply(msg.key(), msg.value())
            self._positions[msg.partition() or 0] = (msg.offset() or 0) + 1


class _Reidentification:
    def __init__(
        self, settings: Settings, producer: AsyncProducer, metrics: Metrics, send_timeout: float
    ) -> None:
        self.settings = settings
        self.reidentifiers = TokenTable(settings.consent_api.reidentifiers)
        self.admins = TokenTable(settings.consent_api.admins)
        self.studies = {s.id for s in settings.studies}
        self.audit_topic = settings.kafka.topic_prefix + topics.AUDIT
        self.producer = producer
        self.metrics = metrics
        self.send_timeout = send_timeout
        self._reader: VaultReader | None = None

    def reader(self) -> VaultReader:
        if self._reader is None:
            secret = self.settings.pseudonym.master_key
            try:
                master = master_key_bytes(None if secret is None else secret.get_secret_value())
            except ConfigurationError:
                raise RefusedRequestError(
                    "vault-not-configured", "the vault has no master key", 503
                ) from None
            key_id = KeyId(self.settings.pseudonym.key_id)
            index = VaultIndex({key_id: vault_keys(master, key_id)})
            self._reader = VaultReader(self.settings, index)
        return self._reader

    def who(self, request: Request) -> str:
        authorization = request.headers.get("authorization")
        name = self.reidentifiers.holder(authorization)
        if name is not None:
            return name
        if self.admins.holder(authorization) is not None:
            raise RefusedRequestError(
                "forbidden", "re-identification needs the re-identifier role", 403
            )
        raise RefusedRequestError("unauthorized", "a valid bearer token is required", 401)

    async def body(self, request: Request) -> tuple[str, str]:
        raw = await request.body()
        if len(raw) > 16 * 1024:
            raise RefusedRequestError("too-large", "the body exceeds 16384 bytes", 413)
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RefusedRequestError("invalid-json", "the body is not JSON", 400) from None
        if not isinstance(body, dict):
            raise RefusedRequestError("not-an-object", "the body must be a JSON object", 400)
        pseudonym, reason = body.get("pseudonym"), body.get("reason")
        if not isinstance(pseudonym, str) or not _PSEUDONYM.fullmatch(pseudonym):
            raise RefusedRequestError(
                "invalid-pseudonym", "pseudonym: 64 lowercase hex characters", 400
            )
        if not isinstance(reason, str) or not reason.strip():
            raise RefusedRequestError(
                "reason-required", "reason: a non-empty text is required", 400
            )
        if len(reason) > MAX_REASON_CHARS:
            raise RefusedRequestError(
                "reason-too-long", f"reason: at most {MAX_REASON_CHARS} chars", 400
            )
        return pseudonym, reason.strip()

    async def run(self, request: Request, study: str) -> Response:
        who = self.who(request)
        if study not in self.studies:
            raise RefusedRequestError("unknown-study", "no such study is configured", 404)
        pseudonym, reason = await self.body(request)
        reader = self.reader()
        try:
            await asyncio.to_thread(reader.catch_up)
        except KafkaUnavailableError:
            raise RefusedRequestError(
                "vault-not-ready", "the vault could not be read; retry later", 503
            ) from None
        patient = reader.index.resolve(study, pseudonym)
        if patient is None:
            raise RefusedRequestError(
                "not-found", "no resolvable pseudonym (never issued, or erased)", 404
            )
        now = datetime.now(UTC)
        audit_id = str(uuid.uuid4())
        audit = reidentification_audit_event(
            study=study,
            pseudonym=pseudonym,
            patient=patient,
            reason=reason,
            reidentifier=who,
            event_id=audit_id,
            recorded=now,
        )
        env = Envelope(audit_id, CE_SOURCE, fhir_event_type("AuditEvent"))
        record = Output(self.audit_topic, audit_id.encode(), orjson.dumps(audit), env.headers())
        try:
            await asyncio.wait_for(self.producer.send_all([record]), self.send_timeout)
        except (KafkaUnavailableError, TimeoutError):
            raise RefusedRequestError(
                "kafka-unavailable", "the audit was not written; retry later", 503
            ) from None
        log.info("re-identification disclosed: reidentifier=%s study=%s", who, study)
        answer = {
            "study": study,
            "pseudonym": pseudonym,
            "patient": patient,
            "auditEvent": audit_id,
        }
        return JSONResponse(answer, 200, headers={"Cache-Control": "no-store"})


def install_reidentification(
    app: FastAPI,
    settings: Settings,
    producer: AsyncProducer,
    metrics: Metrics,
    *,
    send_timeout: float = 30.0,
) -> None:
    """Mount `POST /ResearchStudy/{study}/$reidentify` on an app (the consent API)."""
    service = _Reidentification(settings, producer, metrics, send_timeout)

    @app.post(
        "/ResearchStudy/{study}/$reidentify",
        summary="Re-identify a study pseudonym (re-identifier role, audited)",
    )
    async def reidentify(request: Request, study: str) -> Response:
        metrics.messages_in.labels(COMPONENT).inc()
        try:
            response = await service.run(request, study)
        except RefusedRequestError as refused:
            metrics.rejected.labels(COMPONENT, refused.code).inc()
            log.info("re-identification refused: status=%d code=%s", refused.status, refused.code)
            if refused.status == 401:
                return unauthorized()
            return outcome_response(refused.code, refused.detail, refused.status)
        metrics.messages_out.labels(COMPONENT).inc()
        return response
