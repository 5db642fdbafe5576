"""The FHIR HTTP ingest API: POST /fhir and /fhir/{type} to ingest.fhir.v1, served by uvicorn.

Contract (DESIGN §4, §8):

- `Authorization: Bearer <token>` names the source: a static token of `settings.sources`
  (compared with `hmac.compare_digest`), or an OIDC JWT with the `source-system` role whose
  source claim names a configured source (`caremesh.connectors.http.auth`); missing, unknown,
  expired or wrong-audience → 401, another role → 403, and nothing is read or written.
- Bodies above `http_ingest.max_body_bytes` → 413: the Content-Length is checked first, and the
  body is counted while it streams in, so a chunked body is refused without buffering it all
  (uvicorn discards what the client still sends after the answer).
- `Content-Type: application/fhir+json` (optional `fhirVersion=4.0|4.3|5.0`, which becomes the
  release hint; else the source's configured release) or `application/json`; else 415.
- Malformed input → 400, input failing FHIR validation → 422, both with an OperationOutcome
  whose diagnostics carry a code and a value-free detail.
- The raw body, as received, is written to ingest.fhir.v1 keyed by its message id (see
  `fhir_checks.stable_message_id`; DESIGN §2), in the partition chosen by the patient it
  concerns (`caremesh.connectors.ordering`: same murmur2 hash as the partitioner), so one patient's
  messages stay in one partition and the validate stage keeps their order; 202
  `{"messageId", "resources"}` is answered only after the broker acknowledged it, 503 with
  `Retry-After` when it did not.
- Duplicates: the same Idempotency-Key (or Bundle.identifier, or body) always gives the same
  `ce_id` and is written again; the validate stage and the sinks drop duplicates by `ce_id`.
  There is deliberately no in-process cache of recent ids: it would not span API replicas.
- `/metrics` (Prometheus text) and `/health` need no token: they carry counters, histograms and
  a broker status only, no PHI. `/openapi.json` and `/docs` describe the API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any, Final

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from caremesh import topics
from caremesh.connectors import source_urn
from caremesh.connectors.fhir_checks import (
    Checked,
    check_fhir,
    idempotency_key_problem,
    stable_message_id,
)
from caremesh.connectors.http.auth import ROUTE_ROLES, BearerAuth, Caller, Role, StaticToken
from caremesh.connectors.http.outcome import http_status, outcome_bytes
from caremesh.connectors.http.server import server_config
from caremesh.connectors.ordering import ingest_partition
from caremesh.envelope import FHIR_JSON, H_FHIR_RELEASE, Envelope, fhir_event_type
from caremesh.errors import (
    AuthRefusedError,
    ConfigurationError,
    FhirIssue,
    InvalidFhirError,
    KafkaUnavailableError,
    RefusedRequestError,
)
from caremesh.fhir.ingest import Rejection
from caremesh.fhir.validate import Release, normalise_release, release_from_content_type
from caremesh.heap import freeze_startup_objects
from caremesh.kafka.config import KafkaTarget, confluent_config
from caremesh.kafka.io import AsyncProducer, Output
from caremesh.metrics import PROMETHEUS_CONTENT_TYPE, Metrics
from caremesh.settings import Settings, SourceSettings

log = logging.getLogger(__name__)

COMPONENT: Final = "http_ingest"
BUNDLE_TYPES: Final = frozenset({"batch", "transaction"})
MEDIA_TYPES: Final = frozenset({"application/fhir+json", "application/json"})
RETRY_AFTER_SECONDS: Final = 5
OUTCOME_MEDIA_TYPE: Final = "application/fhir+json"


class BodyTooLargeError(Exception):
    """A request body exceeded the limit while it was read."""


async def read_limited(chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """Concatenate streamed chunks, raising BodyTooLargeError as soon as `limit` is passed.

    At most `limit` bytes are ever held; the chunk that passes the limit is not kept.
    """
    buf = bytearray()
    async for chunk in chunks:
        if len(buf) + len(chunk) > limit:
            raise BodyTooLargeError
        buf += chunk
    return bytes(buf)


@dataclass(frozen=True, slots=True)
class _Source:
    id: str
    release: Release | None


class _BrokerProbe:
    """Whether the broker answers a metadata request; cached for a second or two."""

    def __init__(self, bootstrap_servers: KafkaTarget, ttl: float = 2.0) -> None:
        self._bootstrap = bootstrap_servers
        self._ttl = ttl
        self._checked_at = -1e9
        self._ok = False
        self._admin: Any = None

    def _ask(self) -> bool:
        from caremesh.kafka.client import (  # noqa: PLC0415
            AdminClient,
            KafkaException,
        )

        if self._admin is None:
            self._admin = AdminClient(confluent_config(self._bootstrap, log_level=0))
        try:
            self._admin.list_topics(timeout=2)
        except KafkaException:
            return False
        return True

    async def ok(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at > self._ttl:
            self._ok = await asyncio.to_thread(self._ask)
            self._checked_at = time.monotonic()
        return self._ok


def _sources(configured: list[SourceSettings]) -> dict[str, _Source]:
    out = {}
    for src in configured:
        try:
            release = normalise_release(src.fhir_release)
        except InvalidFhirError as exc:
            raise ConfigurationError(f"source {src.id}: fhir_release is not supported") from exc
        out[src.id] = _Source(src.id, release)
    return out


def _source_tokens(configured: list[SourceSettings]) -> list[StaticToken]:
    return [
        StaticToken(s.token, Caller(s.id, frozenset({Role.SOURCE_SYSTEM}), source=s.id))
        for s in configured
        if s.token is not None
    ]


def _outcome_response(
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
    issues: tuple[FhirIssue, ...] = (),
) -> Response:
    return Response(
        outcome_bytes(code, detail, issues),
        status_code=http_status(code),
        media_type=OUTCOME_MEDIA_TYPE,
        headers=headers,
    )


_BODY_DOC: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": {"type": "object", "description": "FHIR JSON (R4, R4B or R5)"}}
            for media in sorted(MEDIA_TYPES)
        },
    }
}
_RESPONSES_DOC: Final[dict[int | str, dict[str, Any]]] = {
    202: {"description": "Written to Kafka and acknowledged: {messageId, resources}"},
    400: {"description": "Malformed input (OperationOutcome)"},
    401: {"description": "Missing or unknown bearer token (OperationOutcome)"},
    413: {"description": "Body larger than the configured limit (OperationOutcome)"},
    415: {"description": "Content-Type is not FHIR JSON (OperationOutcome)"},
    422: {"description": "Fails FHIR validation or unsupported Bundle type (OperationOutcome)"},
    503: {"description": "Kafka did not acknowledge the write; retry later (OperationOutcome)"},
}


class _IngestApi:
    """The state and request logic behind the routes."""

    def __init__(
        self, settings: Settings, producer: AsyncProducer, metrics: Metrics, send_timeout: float
    ) -> None:
        self.sources = _sources(settings.sources)
        self.auth = BearerAuth.from_settings(settings.oidc, _source_tokens(settings.sources))
        self.max_body = settings.http_ingest.max_body_bytes
        self.topic = settings.kafka.topic_prefix + topics.INGEST_FHIR
        self.producer = producer
        self.metrics = metrics
        self.send_timeout = send_timeout
        self.probe = _BrokerProbe(settings.kafka)

    def authenticate(self, header: str | None) -> _Source:
        try:
            caller = self.auth.authorize(header, ROUTE_ROLES["ingest:post"])
        except AuthRefusedError as refused:
            if refused.status == 403:
                raise RefusedRequestError("forbidden", refused.detail) from None
            raise RefusedRequestError("unauthorized", refused.detail, headers=_CHALLENGE) from None
        found = self.sources.get(caller.source or "")
        if found is None:  # a JWT naming no configured source
            raise RefusedRequestError("forbidden", "the token names no configured source")
        return found

    def release_hint(self, content_type: str | None, src: _Source) -> Release | None:
        media = (content_type or "").split(";")[0].strip().lower()
        if media not in MEDIA_TYPES:
            raise RefusedRequestError("unsupported-media-type", "send application/fhir+json")
        try:
            explicit = release_from_content_type(content_type)
        except InvalidFhirError as exc:
            raise RefusedRequestError(exc.code, exc.detail) from None
        return explicit or src.release

    async def read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise RefusedRequestError("too-large", f"the body exceeds {self.max_body} bytes")
        try:
            return await read_limited(request.stream(), self.max_body)
        except BodyTooLargeError:
            raise RefusedRequestError(
                "too-large", f"the body exceeds {self.max_body} bytes"
            ) from None

    async def write(
        self, src: _Source, mid: str, body: bytes, checked: Checked, hint: str | None
    ) -> None:
        extra = {H_FHIR_RELEASE: hint} if hint else {}
        env = Envelope(
            mid,
            source_urn(src.id),
            fhir_event_type(checked.resource_type),
            content_type=FHIR_JSON,
            extra=extra,
        )
        try:
            # Key = message id (DESIGN §2); partition = patient, so per-patient order holds.
            partitions = await asyncio.wait_for(
                self.producer.partition_count(self.topic), self.send_timeout
            )
            partition = ingest_partition(checked.ordering_key, mid.encode(), partitions)
            record = Output(self.topic, mid.encode(), body, env.headers(), partition)
            await asyncio.wait_for(self.producer.send_all([record]), self.send_timeout)
        except (KafkaUnavailableError, TimeoutError):
            raise RefusedRequestError(
                "kafka-unavailable",
                "the write was not acknowledged; retry later",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None

    async def ingest(
        self, request: Request, expected_type: str | None, bundle_types: frozenset[str] | None
    ) -> Response:
        started = time.perf_counter()
        source_id = "-"
        self.metrics.messages_in.labels(COMPONENT).inc()
        try:
            src = self.authenticate(request.headers.get("authorization"))
            source_id = src.id
            hint = self.release_hint(request.headers.get("content-type"), src)
            key = request.headers.get("idempotency-key")
            if key is not None and (problem := idempotency_key_problem(key)) is not None:
                raise RefusedRequestError(problem.code, problem.detail)
            body = await self.read_body(request)
            checked = await asyncio.to_thread(
                check_fhir,
                body,
                source=src.id,
                release_hint=hint,
                expected_type=expected_type,
                bundle_types=bundle_types,
            )
            if isinstance(checked, Rejection):
                raise RefusedRequestError(checked.code, checked.detail, issues=checked.issues)
            mid = stable_message_id(src.id, body, checked, key)
            await self.write(src, mid, body, checked, hint)
        except RefusedRequestError as refused:
            self.metrics.rejected.labels(COMPONENT, refused.code).inc()
            status = http_status(refused.code)
            log.info("ingest refused: source=%s status=%d code=%s", source_id, status, refused.code)
            return _outcome_response(refused.code, refused.detail, refused.headers, refused.issues)
        except ClientDisconnect:
            log.info("ingest abandoned: source=%s client disconnected", source_id)
            return Response(status_code=400)
        finally:
            self.metrics.stage_duration.labels(COMPONENT).observe(time.perf_counter() - started)
        self.metrics.messages_out.labels(COMPONENT).inc()
        log.info(
            "ingest accepted: source=%s status=202 messages=1 resources=%d",
            src.id,
            checked.resources,
        )
        return JSONResponse({"messageId": mid, "resources": checked.resources}, status_code=202)


_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="caremesh"'}


def create_app(
    settings: Settings, producer: AsyncProducer, metrics: Metrics, *, send_timeout: float = 30.0
) -> FastAPI:
    """The ingest API as an ASGI app; `send_timeout` bounds the wait for Kafka's ack (→ 503)."""
    api = _IngestApi(settings, producer, metrics, send_timeout)
    app = FastAPI(
        title="caremesh FHIR ingest",
        version="1",
        description=(__doc__ or "").split("\n\n", 1)[1],
    )

    @app.post(
        "/fhir",
        status_code=202,
        openapi_extra=_BODY_DOC,
        responses=_RESPONSES_DOC,
        summary="Post a batch or transaction Bundle",
    )
    async def post_bundle(request: Request) -> Response:
        return await api.ingest(request, None, BUNDLE_TYPES)

    @app.post(
        "/fhir/{resource_type}",
        status_code=202,
        openapi_extra=_BODY_DOC,
        responses=_RESPONSES_DOC,
        summary="Post one resource whose resourceType is the one in the URL",
    )
    async def post_resource(resource_type: str, request: Request) -> Response:
        return await api.ingest(request, resource_type, None)

    @app.get("/health", summary="200 when the Kafka broker answers, else 503 (no auth, no PHI)")
    async def health() -> Response:
        ok = await api.probe.ok()
        return JSONResponse({"status": "ok" if ok else "kafka-unavailable"}, 200 if ok else 503)

    @app.get("/metrics", summary="Prometheus metrics (no auth: counters only, no PHI)")
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code)
        if code is None:
            return _outcome_response("invalid-request", f"HTTP {exc.status_code}")
        return _outcome_response(code, "no such operation")

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError) -> Response:
        return _outcome_response("invalid-request", "the request is not well formed")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("ingest failed: %s", type(exc).__name__)
        return _outcome_response("internal-error", "the request could not be processed")

    return app


def run_http_ingest(settings: Settings) -> int:
    """Serve the ingest API on `settings.http_ingest` host:port; returns 0 on SIGTERM.

    On Ctrl-C uvicorn shuts down cleanly and then re-raises KeyboardInterrupt (the CLI maps it
    to exit status 130); the producer is flushed and closed either way.
    """
    producer = AsyncProducer.from_settings(settings.kafka)
    app = create_app(settings, producer, Metrics())
    freeze_startup_objects()
    config = server_config(app, settings.http_ingest.host, settings.http_ingest.port)
    log.info(
        "http ingest listening on %s:%d (%d sources with tokens)",
        settings.http_ingest.host,
        settings.http_ingest.port,
        sum(1 for s in settings.sources if s.token is not None),
    )
    try:
        uvicorn.Server(config).run()
    finally:
        producer.close()
    return 0
