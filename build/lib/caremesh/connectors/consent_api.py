"""The consent API: create, update, withdraw and list Consents, and decide, over the ledger.

Contract (DESIGN §5, §8, §9):

- Every route but `/health`, `/metrics` and `/openapi.json` needs `Authorization: Bearer` with a
  consent administrator's token (`settings.consent_api.admins`) or an OIDC JWT
  (`caremesh.connectors.http.auth`); else 401 and nothing is read. Changes need the
  `consent-admin` role, `GET /Consent` also admits `auditor`, `GET /decision` also `coordinator`;
  another role gets 403.
- `POST /Consent` and `PUT /Consent/{id}` take FHIR Consent JSON, R4 or R5 (a `fhirVersion=`
  Content-Type parameter names the release, else it is detected). The body is validated with
  fhir.resources and read by `consent.parse_consent`; bad JSON → 400, an invalid or unenforceable
  Consent → 422, each with an OperationOutcome naming codes and element paths, never values.
  The server sets `id` when absent (a POST keeps a client's id, so a retry is an idempotent
  upsert) and stamps `meta.lastUpdated`. The patient key is the INS of `Consent.patient` (R4) or
  `Consent.subject` (R5), by identifier or `Patient?identifier=` reference. A source system
  (its ingest token, `settings.sources`, or a JWT with the `source-system` role and a source
  claim) may post and update the Consents it holds: one naming its patient as `Patient/<id>` is
  keyed like that source's clinical records for that id (DESIGN §3, §5): the INS the validate
  stage learned for `<source>/Patient/<id>` (read from its patient-links changelog), else
  `<source>/Patient/<id>`. An operator (consent-admin) names any other patient with
  `?patient=<patient key>` (a Consent naming an INS may not contradict it); a source may not.
- The Consent JSON is appended to consent.events.v1 keyed by the patient key, with an
  AuditEvent on audit.v1 in the same acknowledged write; 201 (POST) / 200 (PUT) is answered only
  after the broker acknowledged both, 503 with `Retry-After` when it did not.
- `POST /Consent/{id}/$withdraw` (`patient` and optional `purpose`, a PurposeOfUse code, as
  query parameters or a JSON body) appends a withdrawal effective now; 404 when the patient has
  no such consent. The answer carries the withdrawal time and the broker's acknowledgement time.
- `GET /Consent?patient=` lists the patient's current consents and `GET /decision?patient=&
  purpose=&actor=&resourceType=&securityLabel=&custodian=&resource=&references=&dataDate=`
  (custodian: who holds the data; resource, references: the data and what it refers to)
  answers with `consent.evaluate` and the policy of `settings.consent`. Both first wait until
  the ledger reader has caught up with every record written before the request, so a client
  reads its own writes; 503 when it cannot. Each decision is audited like the stages' decisions.
- `POST /Patient/$erase` (`patient` as a query parameter or in a JSON body) erases a patient
  (GDPR Art. 17, see `caremesh.consent.erasure`): an erasure record on consent.events.v1, a
  tombstone
  for the patient key on keys.patient.v1 and an AuditEvent, answered 200 only after the broker
  acknowledged all three. From then on every decision for that patient is deny (rule `erased`).
- `POST /ResearchStudy/{study}/$reidentify` (re-identifier role, audited): see
  `caremesh.connectors.reidentify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from caremesh import topics
from caremesh.audit.events import (
    consent_change_audit_event,
    decision_audit_event,
    erasure_audit_event,
)
from caremesh.connectors.http.auth import ROUTE_ROLES, BearerAuth, Caller, Role, StaticToken
from caremesh.connectors.http.server import (
    install_error_handlers,
    outcome_response,
    server,
    unauthorized,
)
from caremesh.connectors.reidentify import install_reidentification
from caremesh.consent import (
    ConsentEvent,
    ConsentUpserted,
    ConsentWithdrawn,
    DecisionQuery,
    evaluate,
    withdrawal_json,
)
from caremesh.consent.erasure import ERASURE_EVENT_TYPE, KEY_TOMBSTONE_TYPE
from caremesh.consent.model import PatientErased
from caremesh.consent.parse import erasure_json
from caremesh.consent.policy import consent_policy
from caremesh.consent.requests import (
    FHIR_ID,
    actor_param,
    check_consent,
    consent_summary,
    date_param,
    labels_param,
    patient_param,
    purpose_param,
    references_param,
    resource_param,
)
from caremesh.envelope import H_FHIR_RELEASE, Envelope, MessageId, PatientKey, fhir_event_type
from caremesh.errors import (
    AuthRefusedError,
    ConsentNotReadyError,
    ConsentRequestError,
    InvalidFhirError,
    KafkaUnavailableError,
    RefusedRequestError,
)
from caremesh.fhir.validate import parse_json
from caremesh.heap import freeze_startup_objects
from caremesh.kafka.admin import ensure_compacted
from caremesh.kafka.client import AioKafkaError as KafkaError
from caremesh.kafka.io import Ack, AsyncProducer, Output
from caremesh.metrics import PROMETHEUS_CONTENT_TYPE, Metrics
from caremesh.settings import Settings
from caremesh.tables.consent_ledger import ConsentLedger
from caremesh.tables.state import GlobalState
from caremesh.topics import patient_links_topic

log = logging.getLogger(__name__)

COMPONENT: Final = "consent_api"
OBSERVER: Final = "caremesh-consent-api"
CE_SOURCE: Final = "urn:caremesh:consent-api"
WITHDRAWAL_TYPE: Final = "org.caremesh.consent.withdrawal"
RETRY_AFTER: Final = {"Retry-After": "5"}
LEDGER_START_ATTEMPTS: Final = 10


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
        self.auth = BearerAuth.from_settings(
            settings.oidc,
            [
                StaticToken(token, Caller(name, frozenset({Role.CONSENT_ADMIN})))
                for name, token in settings.consent_api.admins.items()
            ]
            + [
                StaticToken(
                    source.token,
                    Caller(source.id, frozenset({Role.SOURCE_SYSTEM}), source=source.id),
                )
                for source in settings.sources
                if source.token is not None
            ],
        )
        self.patient_links = GlobalState(
            settings.kafka, patient_links_topic(prefix, settings.worker.app_id)
        )
        self.settings = settings
        self.max_body = settings.consent_api.max_body_bytes
        self.policy = consent_policy(settings.consent)
        self.producer = producer
        self.ledger = ledger
        self.metrics = metrics
        self.send_timeout = send_timeout
        self.read_timeout = read_timeout

    def admin(self, request: Request, route: str = "consent:write") -> str:
        """The caller's name, if it holds a role `route` admits (401 / 403 otherwise)."""
        try:
            caller = self.auth.authorize(request.headers.get("authorization"), ROUTE_ROLES[route])
        except AuthRefusedError as refused:
            code = "unauthorized" if refused.status == 401 else "forbidden"
            raise RefusedRequestError(code, refused.detail, refused.status) from None
        request.state.caller = caller
        return caller.name

    def load_patient_links(self) -> None:
        """Read the validate stage's learned `<source>/Patient/<id>` → INS mappings (blocking)."""
        kafka = self.settings.kafka
        ensure_compacted(
            kafka, self.patient_links.topic, kafka.partitions, kafka.replication_factor
        )
        self.patient_links.load()

    async def posting_source(self, request: Request, given: PatientKey | None) -> str | None:
        """The source system posting (None for an operator); a source may not use ?patient=."""
        caller: Caller = request.state.caller
        if Role.CONSENT_ADMIN in caller.roles or Role.SOURCE_SYSTEM not in caller.roles:
            return None
        if caller.source is None:
            raise RefusedRequestError("forbidden", "the source system token names no source", 403)
        if given is not None:
            raise RefusedRequestError("forbidden", "patient: for operators only", 403)
        try:
            await asyncio.to_thread(self.patient_links.catch_up_to_end, self.read_timeout)
        except ConsentNotReadyError:
            raise RefusedRequestError(
                "consent-not-ready", "patient links are catching up; retry later", 503, RETRY_AFTER
            ) from None
        return caller.source

    async def read_json(self, request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise RefusedRequestError("too-large", f"the body exceeds {self.max_body} bytes", 413)
        body = bytearray()
        async for chunk in request.stream():
            if len(body) + len(chunk) > self.max_body:
                raise RefusedRequestError(
                    "too-large", f"the body exceeds {self.max_body} bytes", 413
                )
            body += chunk
        try:
            return parse_json(bytes(body))
        except InvalidFhirError as exc:
            raise RefusedRequestError(exc.code, exc.detail, 400) from None

    def audit_record(
        self, event: ConsentEvent, patient: PatientKey, admin: str, at: datetime
    ) -> Output:
        audit_id = str(uuid.uuid4())
        audit = consent_change_audit_event(
            event, patient, event_id=audit_id, recorded=at, observer=OBSERVER, requestor=admin
        )
        env = Envelope(audit_id, CE_SOURCE, fhir_event_type("AuditEvent"))
        return Output(self.audit_topic, audit_id.encode(), orjson.dumps(audit), env.headers())

    async def write(self, records: list[Output]) -> Ack:
        try:
            acks = await asyncio.wait_for(self.producer.send_all(records), self.send_timeout)
        except (KafkaUnavailableError, TimeoutError):
            raise RefusedRequestError(
                "kafka-unavailable", "the write was not acknowledged; retry later", 503, RETRY_AFTER
            ) from None
        return acks[0]

    async def caught_up(self) -> None:
        try:
            await self.ledger.wait_caught_up(as_of=time.time(), timeout=self.read_timeout)
        except ConsentNotReadyError:
            raise RefusedRequestError(
                "consent-not-ready", "consent state is catching up; retry later", 503, RETRY_AFTER
            ) from None

    async def upsert(
        self, request: Request, admin: str, path_id: str | None, given: PatientKey | None
    ) -> Response:
        source = await self.posting_source(request, given)
        body = await self.read_json(request)
        checked = await asyncio.to_thread(
            check_consent,
            body,
            request.headers.get("content-type"),
            path_id,
            given,
            source=source,
            learned=dict(self.patient_links.data) if source is not None else None,
        )
        consent = checked.consent
        now = datetime.now(UTC)
        env = Envelope(
            MessageId(str(uuid.uuid4())),
            CE_SOURCE,
            fhir_event_type("Consent"),
            extra={H_FHIR_RELEASE: consent.release.value},
        )
        record = Output(
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
                raise RefusedRequestError("not-an-object", "the body must be a JSON object", 400)
            patient = patient or _str_or_none(body.get("patient"))
            purpose = purpose or _str_or_none(body.get("purpose"))
        key = patient_param(patient)
        if key is None:
            raise RefusedRequestError("patient-key-required", "patient: required", 400)
        code = purpose_param(purpose, required=False)
        await self.caught_up()
        if not any(c.id == consent_id for c in self.ledger.consents(key)):
            raise RefusedRequestError("consent-not-found", "the patient has no such consent", 404)
        event = ConsentWithdrawn(consent_id, datetime.now(UTC), code)
        env = Envelope(
            MessageId(str(uuid.uuid4())),
            CE_SOURCE,
            WITHDRAWAL_TYPE,
            content_type="application/json",
        )
        record = Output(
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
        key = patient_param(patient)
        if key is None:
            raise RefusedRequestError("patient-key-required", "patient: required", 400)
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
        *,
        data: DataQuery | None = None,
    ) -> Response:
        key = patient_param(patient)
        if key is None:
            raise RefusedRequestError("patient-key-required", "patient: required", 400)
        code = purpose_param(purpose, required=True)
        assert code is not None
        label_set = labels_param(labels)
        await self.caught_up()
        now = datetime.now(UTC)
        query = DecisionQuery(
            patient=key,
            purpose=code,
            now=now,
            actor=actor_param(actor),
            resource_type=resource_type,
            security_labels=label_set,
            custodian=actor_param(data.custodian) if data else None,
            resource=resource_param(data.resource) if data else None,
            references=references_param(data.references) if data else None,
            data_date=date_param(data.data_date, "dataDate") if data else None,
        )
        decision = evaluate(self.ledger.consents(key), query, self.policy)
        self.metrics.consent_decisions.labels(COMPONENT, code, decision.outcome.value).inc()
        audit_id = str(uuid.uuid4())
        audit = decision_audit_event(
            query, decision, event_id=audit_id, recorded=now, observer=OBSERVER
        )
        env = Envelope(audit_id, CE_SOURCE, fhir_event_type("AuditEvent"))
        await self.write(
            [Output(self.audit_topic, audit_id.encode(), orjson.dumps(audit), env.headers())]
        )
        answer = {
            "outcome": decision.outcome.value,
            "rule": decision.rule.value,
            "purpose": decision.purpose,
            "consentIds": list(decision.consent_ids),
            "provision": decision.provision,
        }
        return JSONResponse(answer)


@dataclass(frozen=True, slots=True)
class DataQuery:
    """The /decision parameters that describe the data asked about, as received."""

    custodian: str | None = None
    resource: str | None = None
    references: str | None = None
    data_date: str | None = None


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
        pause = 0.5
        for attempt in range(1, LEDGER_START_ATTEMPTS + 1):
            try:
                await ledger.start()
                await asyncio.to_thread(api.load_patient_links)
                break
            except (ConsentNotReadyError, KafkaError):
                if attempt == LEDGER_START_ATTEMPTS:
                    raise
                log.warning("consent ledger not readable yet; retrying in %.1fs", pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
        try:
            yield
        finally:
            await ledger.stop()
            api.patient_links.close()

    app = FastAPI(
        title="caremesh consent API",
        version="1",
        description=(__doc__ or "").split("\n\n", 1)[1],
        lifespan=lifespan,
    )
    install_error_handlers(app, COMPONENT)
    install_reidentification(app, settings, producer, metrics, send_timeout=send_timeout)

    async def guarded(
        request: Request, run: Any, *args: Any, route: str = "consent:write"
    ) -> Response:
        metrics.messages_in.labels(COMPONENT).inc()
        try:
            admin = api.admin(request, route)
            try:
                response: Response = await run(admin, *args)
            except ConsentRequestError as bad:
                raise RefusedRequestError(bad.code, bad.detail, bad.status) from None
        except RefusedRequestError as refused:
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
            return await api.upsert(request, admin, None, patient_param(patient))

        return await guarded(request, run, route="consent:record")

    @app.put("/Consent/{consent_id}", openapi_extra=_CONSENT_BODY, summary="Update (new version)")
    async def update(request: Request, consent_id: str, patient: Patient = None) -> Response:
        async def run(admin: str) -> Response:
            if not FHIR_ID.fullmatch(consent_id):
                raise RefusedRequestError("invalid-id", "the URL id is not a FHIR id", 400)
            return await api.upsert(request, admin, consent_id, patient_param(patient))

        return await guarded(request, run, route="consent:record")

    @app.post("/Consent/{consent_id}/$withdraw", summary="Withdraw (all or one purpose)")
    async def withdraw(
        request: Request, consent_id: str, patient: Patient = None, purpose: str | None = None
    ) -> Response:
        async def run(admin: str) -> Response:
            return await api.withdraw(request, admin, consent_id, patient, purpose)

        return await guarded(request, run)

    @app.post("/Patient/$erase", summary="Erase a patient (GDPR Art. 17, crypto-shredding)")
    async def erase(request: Request, patient: Patient = None) -> Response:
        async def run(admin: str) -> Response:
            given = patient
            if request.headers.get("content-length", "0") not in ("", "0"):
                body = await api.read_json(request)
                if not isinstance(body, dict):
                    raise RefusedRequestError(
                        "not-an-object", "the body must be a JSON object", 400
                    )
                given = given or _str_or_none(body.get("patient"))
            key = patient_param(given)
            if key is None:
                raise RefusedRequestError("patient-key-required", "patient: required", 400)
            event = PatientErased(datetime.now(UTC))
            audit_id = str(uuid.uuid4())
            audit = erasure_audit_event(
                key,
                erased_at=event.at,
                event_id=audit_id,
                recorded=event.at,
                observer=OBSERVER,
                requestor=admin,
            )
            ledger_env = Envelope(
                MessageId(str(uuid.uuid4())),
                CE_SOURCE,
                ERASURE_EVENT_TYPE,
                content_type="application/json",
            )
            tombstone_env = Envelope(
                MessageId(str(uuid.uuid4())),
                CE_SOURCE,
                KEY_TOMBSTONE_TYPE,
                content_type="application/octet-stream",
            )
            audit_env = Envelope(audit_id, CE_SOURCE, fhir_event_type("AuditEvent"))
            ack = await api.write(
                [
                    Output(
                        api.ledger_topic,
                        key.encode(),
                        orjson.dumps(erasure_json(event)),
                        ledger_env.headers(),
                    ),
                    Output(
                        settings.kafka.topic_prefix + topics.KEYS_PATIENT,
                        key.encode(),
                        None,
                        tombstone_env.headers(),
                    ),
                    Output(
                        api.audit_topic, audit_id.encode(), orjson.dumps(audit), audit_env.headers()
                    ),
                ]
            )
            log.info(
                "patient erased: admin=%s partition=%d offset=%d", admin, ack.partition, ack.offset
            )
            answer = {
                "erasedAt": event.at.isoformat(),
                "acknowledgedAt": datetime.now(UTC).isoformat(),
            }
            return JSONResponse(answer, 200)

        return await guarded(request, run)

    @app.get("/Consent", summary="The patient's current consents")
    async def listing(request: Request, patient: Patient = None) -> Response:
        async def run(admin: str) -> Response:
            return await api.listing(patient)

        return await guarded(request, run, route="consent:read")

    @app.get("/decision", summary="Decide (patient, purpose, actor, resource type)")
    async def decision(
        request: Request,
        *,
        patient: Patient = None,
        purpose: str | None = None,
        actor: str | None = None,
        resource_type: Annotated[str | None, Query(alias="resourceType")] = None,
        security_label: Annotated[str | None, Query(alias="securityLabel")] = None,
        custodian: Annotated[
            str | None, Query(description="who holds the data: `Type/id` or `system|value`")
        ] = None,
        resource: Annotated[str | None, Query(description="the data: `Type/id`")] = None,
        references: Annotated[
            str | None, Query(description="`Type/id` the data refers to, comma-separated")
        ] = None,
        data_date: Annotated[str | None, Query(alias="dataDate")] = None,
    ) -> Response:
        data = DataQuery(custodian, resource, references, data_date)

        async def run(admin: str) -> Response:
            return await api.decide(
                patient, purpose, actor, resource_type, security_label, data=data
            )

        return await guarded(request, run, route="consent:decide")

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
    producer = AsyncProducer.from_settings(settings.kafka)
    ledger = ConsentLedger(settings.kafka, settings.kafka.topic_prefix + topics.CONSENT_EVENTS)
    app = create_app(settings, producer, ledger, Metrics())
    freeze_startup_objects()
    cfg = settings.consent_api
    log.info(
        "consent api listening on %s:%d (%d administrators)", cfg.host, cfg.port, len(cfg.admins)
    )
    try:
        server(app, cfg.host, cfg.port).run()
    finally:
        producer.close()
    return 0
