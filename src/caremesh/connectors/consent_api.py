"""The consent API: create, update, withdraw and list Consents, and decide, over the ledger.

Contract (DESIGN §5, §8, §9):

- Every route but `/health`, `/metrics` and `/openapi.json` needs `Authorization: Bearer` with a
  consent administrator's token (`settings.consent_api.admins`); else 401 and nothing is read.
- `POST /Consent` and `PUT /Consent/{id}` take FHIR Consent JSON, R4 or R5 (a `fhirVersion=`
  Content-Type parameter names the release, else it is detected). The body is validated with
  fhir.resources and read by `consent.parse_consent`; bad JSON → 400, an invalid or unenforceable
  Consent → 422, each with an OperationOutcome naming codes and element paths, never values.
  The server sets `id` when absent (a POST keeps a client's id, so a retry is an idempotent
  upsert) and stamps `meta.lastUpdated`. The patient key is the INS of `Consent.patient` (R4) or
  `Consent.subject` (R5), by identifier or `Patient?identifier=` reference; a Consent naming its
  patient otherwise needs `?patient=<patient key>` (and one naming an INS may not contradict it).
- The Consent JSON is appended to consent.events.v1 keyed by the patient key, with an
  AuditEvent on audit.v1 in the same acknowledged write; 201 (POST) / 200 (PUT) is answered only
  after the broker acknowledged both, 503 with `Retry-After` when it did not.
- `POST /Consent/{id}/$withdraw` (`patient` and optional `purpose`, a PurposeOfUse code, as
  query parameters or a JSON body) appends a withdrawal effective now; 404 when the patient has
  no such consent. The answer carries the withdrawal time and the broker's acknowledgement time.
- `GET /Consent?patient=` lists the patient's current consents and `GET /decision?patient=&
  purpose=&actor=&resourceType=&securityLabel=` answers with `consent.evaluate` and the policy of
  `settings.consent`. Both first wait until the ledger reader has caught up with every record
  written before the request, so a client reads its own writes; 503 when it cannot. Each
  decision is audited like the stages' decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from caremesh import topics
from caremesh.connectors.http_common import (
    TokenTable,
    install_error_handlers,
    outcome_response,
    server,
    unauthorized,
)
from caremesh.consent import (
    ActorRef,
    Consent,
    ConsentEvent,
    ConsentUpserted,
    ConsentWithdrawn,
    DecisionQuery,
    FhirRelease,
    evaluate,
    parse_consent,
    withdrawal_json,
)
from caremesh.consent.audit import consent_change_audit_event, decision_audit_event
from caremesh.consent.evaluate import named_purposes
from caremesh.consent.parse import detect_release
from caremesh.consent.purpose import is_purpose
from caremesh.envelope import H_FHIR_RELEASE, Envelope, MessageId, PatientKey, fhir_event_type
from caremesh.errors import ConsentNotReadyError, InvalidFhirError, KafkaUnavailableError
from caremesh.fhir.patient_key import resolve_reference
from caremesh.fhir.validate import parse_json, release_from_content_type, validate_resource
from caremesh.kafka_io import Ack, AsyncProducer, OutRecord
from caremesh.metrics import PROMETHEUS_CONTENT_TYPE, Metrics
from caremesh.policy import consent_policy
from caremesh.settings import Settings
from caremesh.streams.ledger import ConsentLedger

log = logging.getLogger(__name__)

COMPONENT: Final = "consent_api"
OBSERVER: Final = "caremesh-consent-api"
CE_SOURCE: Final = "urn:caremesh:consent-api"
WITHDRAWAL_TYPE: Final = "org.caremesh.consent.withdrawal"
RETRY_AFTER: Final = {"Retry-After": "5"}
_PATIENT_KEY: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/\-]{0,199}")
_FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_LABEL: Final = re.compile(r"[A-Za-z0-9_\-]{1,32}")


class _RefusedError(Exception):
    """Control flow of a handler: answer with an OperationOutcome."""

    def __init__(
        self, code: str, detail: str, status: int, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail
        self.status = status
        self.headers = headers


@dataclass(frozen=True, slots=True)
class _Checked:
    body: dict[str, Any]
    consent: Consent
    patient: PatientKey


def _patient_param(value: str | None) -> PatientKey | None:
    if value is None:
        return None
    if not _PATIENT_KEY.fullmatch(value):
        raise _RefusedError("invalid-patient", "patient: not a patient key", 400)
    return PatientKey(value)


def _purpose_param(value: str | None, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise _RefusedError("invalid-purpose", "purpose: required", 400)
        return None
    if not is_purpose(value):
        raise _RefusedError("invalid-purpose", "purpose: not a v3 ActReason PurposeOfUse", 400)
    return value


def _actor_param(value: str | None) -> ActorRef | None:
    """`Type/id` as a reference, `system|value` as an identifier."""
    if value is None:
        return None
    if "|" in value:
        return ActorRef(identifier=value)
    return ActorRef(reference=value)


def consent_patient_key(body: Mapping[str, Any], release: FhirRelease) -> PatientKey | None:
    """The INS a Consent names its patient by (`patient` R4, `subject` R5), or None."""
    element = body.get("patient" if release is FhirRelease.R4 else "subject")
    found = resolve_reference(element, CE_SOURCE, {})
    return found.key if found is not None and found.kind == "ins" else None


def consent_summary(consent: Consent) -> dict[str, Any]:
    """What `GET /Consent` lists of one consent (from the normalised ledger state)."""
    out: dict[str, Any] = {
        "id": consent.id,
        "release": consent.release.value,
        "status": consent.status.value,
        "decision": consent.root.outcome.value if consent.root is not None else None,
        "purposes": sorted(named_purposes(consent)),
    }
    if consent.recorded is not None:
        out["recorded"] = consent.recorded.isoformat()
    if consent.period is not None:
        out["period"] = {
            "start": consent.period.start.isoformat() if consent.period.start else None,
            "end": consent.period.end.isoformat() if consent.period.end else None,
        }
    out["withdrawals"] = [
        {"at": w.at.isoformat(), "purpose": w.purpose} for w in consent.withdrawals
    ]
    return out


class _ConsentApi:
    """The state and request logic behind the routes."""

    def __init__(
        self,
        settings: Settings,
        *,
        producer: AsyncProducer,
        ledger: ConsentLedger,
        metrics: Metrics,
        send_timeout: float,
        read_timeout: float,
    ) -> None:
        prefix = settings.kafka.topic_prefix
        self.ledger_topic = prefix + topics.CONSENT_EVENTS
        self.audit_topic = prefix + topics.AUDIT
        self.tokens = TokenTable(settings.consent_api.admins)
        self.max_body = settings.consent_api.max_body_bytes
        self.policy = consent_policy(settings.consent)
        self.producer = producer
        self.ledger = ledger
        self.metrics = metrics
        self.send_timeout = send_timeout
        self.read_timeout = read_timeout

    def admin(self, request: Request) -> str:
        name = self.tokens.holder(request.headers.get("authorization"))
        if name is None:
            raise _RefusedError("unauthorized", "a valid bearer token is required", 401)
        return name

    async def read_json(self, request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise _RefusedError("too-large", f"the body exceeds {self.max_body} bytes", 413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                raise _RefusedError("too-large", f"the body exceeds {self.max_body} bytes", 413)
        try:
            return parse_json(body)
        except InvalidFhirError as exc:
            raise _RefusedError(exc.code, exc.detail, 400) from None

    def check(
        self, body: Any, content_type: str | None, path_id: str | None, given: PatientKey | None
    ) -> _Checked:
        """Validate a posted Consent and settle its id and patient key (runs in a thread)."""
        if not isinstance(body, dict) or body.get("resourceType") != "Consent":
            raise _RefusedError("not-a-consent", "the body must be a FHIR Consent", 422)
        try:
            release = release_from_content_type(content_type)
            rel = FhirRelease.R5 if release == "R5" else FhirRelease.R4 if release else None
            rel = rel or detect_release(body)
        except InvalidFhirError as exc:
            raise _RefusedError(exc.code, exc.detail, 422) from None
        body_id = body.get("id")
        if path_id is not None and body_id is not None and body_id != path_id:
            raise _RefusedError("id-mismatch", "Consent.id differs from the URL id", 400)
        body = dict(body)
        body["id"] = path_id or body_id or str(uuid.uuid4())
        if not isinstance(body["id"], str) or not _FHIR_ID.fullmatch(body["id"]):
            raise _RefusedError("invalid-id", "Consent.id is not a FHIR id", 422)
        meta = body.get("meta")
        body["meta"] = {
            **(meta if isinstance(meta, dict) else {}),
            "lastUpdated": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        try:
            validate_resource(body, rel.value)
            consent = parse_consent(body, rel)
        except InvalidFhirError as exc:
            raise _RefusedError(exc.code, exc.detail, 422) from None
        named = consent_patient_key(body, rel)
        if named is not None and given is not None and named != given:
            raise _RefusedError("patient-mismatch", "?patient differs from the Consent's INS", 422)
        patient = named or given
        if patient is None:
            raise _RefusedError(
                "patient-key-required",
                "the Consent names no INS identifier: give ?patient=<patient key>",
                422,
            )
        return _Checked(body, consent, patient)

    def audit_record(
        self, event: ConsentEvent, patient: PatientKey, admin: str, at: datetime
    ) -> OutRecord:
        audit_id = str(uuid.uuid4())
        audit = consent_change_audit_event(
            event, patient, event_id=audit_id, recorded=at, observer=OBSERVER, requestor=admin
        )
        env = Envelope(audit_id, CE_SOURCE, fhir_event_type("AuditEvent"))
        return OutRecord(self.audit_topic, audit_id.encode(), orjson.dumps(audit), env.headers())

    async def write(self, records: list[OutRecord]) -> Ack:
        try:
            acks = await asyncio.wait_for(self.producer.send_all(records), self.send_timeout)
        except (KafkaUnavailableError, TimeoutError):
            raise _RefusedError(
                "kafka-unavailable", "the write was not acknowledged; retry later", 503, RETRY_AFTER
            ) from None
        return acks[0]

    async def caught_up(self) -> None:
        try:
            await self.ledger.wait_caught_up(as_of=time.time(), timeout=self.read_timeout)
        except ConsentNotReadyError:
            raise _RefusedError(
                "consent-not-ready", "consent state is catching up; retry later", 503, RETRY_AFTER
            ) from None

    async def upsert(
        self, request: Request, admin: str, path_id: str | None, given: PatientKey | None
    ) -> Response:
        body = await self.read_json(request)
        checked = await asyncio.to_thread(
            self.check, body, request.headers.get("content-type"), path_id, given
        )
        consent = checked.consent
        now = datetime.now(UTC)
        env = Envelope(
            MessageId(str(uuid.uuid4())),
            CE_SOURCE,
            fhir_event_type("Consent"),
            extra={H_FHIR_RELEASE: consent.release.value},
        )
        record = OutRecord(
            self.ledger_topic, checked.patient.encode(), orjson.dumps(checked.body), env.headers()
        )
        audit = self.audit_record(ConsentUpserted(consent), checked.patient, admin, now)
        ack = await self.write([record, audit])
        log.info(
            "consent written: admin=%s release=%s status=%s partition=%d offset=%d",
            admin,
            consent.release.value,
            consent.status.value,
            ack.partition,
            ack.offset,
        )
        answer = {
            "id": consent.id,
            "release": consent.release.value,
            "status": consent.status.value,
            "lastUpdated": checked.body["meta"]["lastUpdated"],
            "acknowledgedAt": datetime.now(UTC).isoformat(),
        }
        status = 201 if path_id is None else 200
        return JSONResponse(answer, status, headers={"Location": f"Consent/{consent.id}"})

    async def withdraw(
        self,
        request: Request,
        admin: str,
        consent_id: str,
        patient: str | None,
        purpose: str | None,
    ) -> Response:
        if request.headers.get("content-length", "0") not in ("", "0"):
            body = await self.read_json(request)
            if not isinstance(body, dict):
                raise _RefusedError("not-an-object", "the body must be a JSON object", 400)
            patient = patient or _str_or_none(body.get("patient"))
            purpose = purpose or _str_or_none(body.get("purpose"))
        key = _patient_param(patient)
        if key is None:
            raise _RefusedError("patient-key-required", "patient: required", 400)
        code = _purpose_param(purpose, required=False)
        await self.caught_up()
        if not any(c.id == consent_id for c in self.ledger.consents(key)):
            raise _RefusedError("consent-not-found", "the patient has no such consent", 404)
        event = ConsentWithdrawn(consent_id, datetime.now(UTC), code)
        env = Envelope(
            MessageId(str(uuid.uuid4())),
            CE_SOURCE,
            WITHDRAWAL_TYPE,
            content_type="application/json",
        )
        record = OutRecord(
            self.ledger_topic, key.encode(), orjson.dumps(withdrawal_json(event)), env.headers()
        )
        ack = await self.write([record, self.audit_record(event, key, admin, event.at)])
        acked_at = datetime.now(UTC)
        log.info(
            "consent withdrawn: admin=%s purpose=%s partition=%d offset=%d",
            admin,
            code or "all",
            ack.partition,
            ack.offset,
        )
        answer = {
            "consentId": consent_id,
            "purpose": code,
            "at": event.at.isoformat(),
            "acknowledgedAt": acked_at.isoformat(),
        }
        return JSONResponse(answer, 200)

    async def listing(self, patient: str | None) -> Response:
        key = _patient_param(patient)
        if key is None:
            raise _RefusedError("patient-key-required", "patient: required", 400)
        await self.caught_up()
        consents = [consent_summary(c) for c in self.ledger.consents(key)]
        return JSONResponse({"total": len(consents), "consents": consents})

    async def decide(
        self,
        patient: str | None,
        purpose: str | None,
        actor: str | None,
        resource_type: str | None,
        labels: str | None,
    ) -> Response:
        key = _patient_param(patient)
        if key is None:
            raise _RefusedError("patient-key-required", "patient: required", 400)
        code = _purpose_param(purpose, required=True)
        assert code is not None
        label_set = frozenset(x for x in (labels or "").split(",") if x)
        if not all(_LABEL.fullmatch(x) for x in label_set):
            raise _RefusedError("invalid-label", "securityLabel: not a code list", 400)
        await self.caught_up()
        now = datetime.now(UTC)
        query = DecisionQuery(
            patient=key,
            purpose=code,
            now=now,
            actor=_actor_param(actor),
            resource_type=resource_type,
            security_labels=label_set,
        )
        decision = evaluate(self.ledger.consents(key), query, self.policy)
        self.metrics.consent_decisions.labels(COMPONENT, code, decision.outcome.value).inc()
        audit_id = str(uuid.uuid4())
        audit = decision_audit_event(
            query, decision, event_id=audit_id, recorded=now, observer=OBSERVER
        )
        env = Envelope(audit_id, CE_SOURCE, fhir_event_type("AuditEvent"))
        await self.write(
            [OutRecord(self.audit_topic, audit_id.encode(), orjson.dumps(audit), env.headers())]
        )
        answer = {
            "outcome": decision.outcome.value,
            "rule": decision.rule.value,
            "purpose": decision.purpose,
            "consentIds": list(decision.consent_ids),
            "provision": decision.provision,
        }
        return JSONResponse(answer)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


_CONSENT_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": {"type": "object", "description": "FHIR Consent (R4 or R5)"}}
            for media in ("application/fhir+json", "application/json")
        },
    }
}

Patient = Annotated[str | None, Query(description="patient key (INS or source-scoped key)")]


def create_app(
    settings: Settings,
    producer: AsyncProducer,
    ledger: ConsentLedger,
    metrics: Metrics,
    *,
    send_timeout: float = 30.0,
    read_timeout: float = 10.0,
) -> FastAPI:
    """The consent API as an ASGI app; its lifespan starts and stops `ledger`."""
    api = _ConsentApi(
        settings,
        producer=producer,
        ledger=ledger,
        metrics=metrics,
        send_timeout=send_timeout,
        read_timeout=read_timeout,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ledger.start()
        try:
            yield
        finally:
            await ledger.stop()

    app = FastAPI(
        title="caremesh consent API",
        version="1",
        description=(__doc__ or "").split("\n\n", 1)[1],
        lifespan=lifespan,
    )
    install_error_handlers(app, COMPONENT)

    async def guarded(request: Request, run: Any, *args: Any) -> Response:
        metrics.messages_in.labels(COMPONENT).inc()
        try:
            admin = api.admin(request)
            response: Response = await run(admin, *args)
        except _RefusedError as refused:
            metrics.rejected.labels(COMPONENT, refused.code).inc()
            log.info("consent api refused: status=%d code=%s", refused.status, refused.code)
            if refused.status == 401:
                return unauthorized()
            return outcome_response(refused.code, refused.detail, refused.status, refused.headers)
        metrics.messages_out.labels(COMPONENT).inc()
        return response

    @app.post("/Consent", status_code=201, openapi_extra=_CONSENT_BODY, summary="Create")
    async def create(request: Request, patient: Patient = None) -> Response:
        async def run(admin: str) -> Response:
            return await api.upsert(request, admin, None, _patient_param(patient))

        return await guarded(request, run)

    @app.put("/Consent/{consent_id}", openapi_extra=_CONSENT_BODY, summary="Update (new version)")
    async def update(request: Request, consent_id: str, patient: Patient = None) -> Response:
        async def run(admin: str) -> Response:
            if not _FHIR_ID.fullmatch(consent_id):
                raise _RefusedError("invalid-id", "the URL id is not a FHIR id", 400)
            return await api.upsert(request, admin, consent_id, _patient_param(patient))

        return await guarded(request, run)

    @app.post("/Consent/{consent_id}/$withdraw", summary="Withdraw (all or one purpose)")
    async def withdraw(
        request: Request, consent_id: str, patient: Patient = None, purpose: str | None = None
    ) -> Response:
        async def run(admin: str) -> Response:
            return await api.withdraw(request, admin, consent_id, patient, purpose)

        return await guarded(request, run)

    @app.get("/Consent", summary="The patient's current consents")
    async def listing(request: Request, patient: Patient = None) -> Response:
        async def run(admin: str) -> Response:
            return await api.listing(patient)

        return await guarded(request, run)

    @app.get("/decision", summary="Decide (patient, purpose, actor, resource type)")
    async def decision(
        request: Request,
        *,
        patient: Patient = None,
        purpose: str | None = None,
        actor: str | None = None,
        resource_type: Annotated[str | None, Query(alias="resourceType")] = None,
        security_label: Annotated[str | None, Query(alias="securityLabel")] = None,
    ) -> Response:
        async def run(admin: str) -> Response:
            return await api.decide(patient, purpose, actor, resource_type, security_label)

        return await guarded(request, run)

    @app.get("/health", summary="200 when consent state has caught up (no auth, no PHI)")
    async def health() -> Response:
        try:
            await ledger.wait_caught_up(timeout=2.0)
        except ConsentNotReadyError:
            metrics.consent_ready.labels(COMPONENT).set(0)
            return JSONResponse({"status": "consent-not-ready"}, 503)
        metrics.consent_ready.labels(COMPONENT).set(1)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", summary="Prometheus metrics (no auth: counters only, no PHI)")
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

    return app


def run_consent_api(settings: Settings) -> int:
    """Serve the consent API on `settings.consent_api` host:port until interrupted; returns 0."""
    producer = AsyncProducer(settings.kafka.bootstrap_servers)
    ledger = ConsentLedger(
        settings.kafka.bootstrap_servers, settings.kafka.topic_prefix + topics.CONSENT_EVENTS
    )
    app = create_app(settings, producer, ledger, Metrics())
    cfg = settings.consent_api
    log.info(
        "consent api listening on %s:%d (%d administrators)", cfg.host, cfg.port, len(cfg.admins)
    )
    try:
        server(app, cfg.host, cfg.port).run()
    finally:
        producer.close()
    return 0
