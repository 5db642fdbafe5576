"""The care coordinators' web inbox (DESIGN §8): FastAPI routes over the alert feed, and uvicorn.

Contract:

- Pages are in French (the default) or English: `?lang=fr|en` (the page's switch, remembered
  in the `caremesh_inbox_lang` cookie), else the browser's Accept-Language (`i18n`).
- `GET /login` and `POST /login` (form: username, password, csrf) sign a coordinator in with a
  signed session cookie (HttpOnly, SameSite=Strict, HMAC-SHA256 with the session secret, see
  `auth`); `POST /logout` (form csrf) ends it. `GET /` is the inbox page, or 303 to `/login`.
- A coordinator sees only alerts whose Communication.recipient is `Organization/<their org>`,
  in the page, the JSON API and the event stream; another organisation's alert id is 404.
- Every alert's JSON carries `context`: the patient's name, sex, age, phone and care team
  (folded from the Patient and CareTeam resources of clinical.fhir.v1), only while the patient's
  consent permits TREAT for the coordinating organisation (the share stage's question, on the
  consent ledger caught up as of the request); else `{"withheld": "consent"}`.
- `GET /api/alerts?pathway=&severity=&status=open|closed` lists them, newest first;
  `GET /api/alerts/stream` (text/event-stream) sends `event: alert` with the alert's JSON
  whenever one of the organisation's alerts is new or changed, and `: keep-alive` comments.
- `POST /api/alerts/{id}/ack|dismiss` with JSON `{"note": ...}` and the page's
  `X-CSRF-Token` writes the action to pathway.actions.v1 (key: the patient key) and an
  AuditEvent to audit.v1, waits for the broker's acknowledgement, closes the alert and answers
  202 `{"alert": ...}` (409 when already closed, 503 when Kafka did not acknowledge).
- The JSON API (`/api/...`) also accepts `Authorization: Bearer <JWT>` with the `coordinator`
  role when `CAREMESH_OIDC__*` is configured; the organisation is the token's organisation claim
  and scopes everything exactly as a session does; no CSRF token is needed with a bearer token.
- The API answers 401 without a session or a valid token (403 for a token without the
  coordinator role or without an organisation) and 503 until the fold has caught up.
- `/health` (200 once caught up, else 503) and `/metrics` need no session and carry no PHI.
  Logs carry organisation ids, counts and codes; never a patient key, a note or a username.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from caremesh import topics
from caremesh.connectors.http.server import server_config
from caremesh.connectors.inbox.auth import csrf_token
from caremesh.connectors.inbox.feed import AlertFeed
from caremesh.connectors.inbox.handlers import InboxHandlers
from caremesh.connectors.inbox.pages import STATIC_DIR, inbox_page
from caremesh.connectors.inbox.sessions import SessionBook
from caremesh.connectors.inbox.web import SecurityHeaders, error
from caremesh.heap import freeze_startup_objects
from caremesh.kafka.io import AsyncProducer
from caremesh.metrics import PROMETHEUS_CONTENT_TYPE, Metrics
from caremesh.settings import Settings
from caremesh.tables.consent_ledger import ConsentLedger

log = logging.getLogger(__name__)

STATIC_FILES: Final = {"inbox.js": "text/javascript", "inbox.css": "text/css"}


def create_app(
    settings: Settings,
    producer: AsyncProducer,
    metrics: Metrics,
    *,
    feed: AlertFeed | None = None,
    send_timeout: float = 30.0,
) -> ASGIApp:
    """The inbox as an ASGI app; the feed is started and stopped with the app's lifespan."""
    prefix = settings.kafka.topic_prefix
    feed = feed or AlertFeed(
        settings.kafka,
        prefix + topics.PATHWAY_ALERTS,
        prefix + topics.PATHWAY_ACTIONS,
        metrics,
        clinical_topic=prefix + topics.CLINICAL_FHIR,
    )
    ledger = ConsentLedger(settings.kafka, prefix + topics.CONSENT_EVENTS)
    inbox = InboxHandlers(settings, producer, metrics, feed, send_timeout, ledger=ledger)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await feed.start()
        await ledger.start()
        try:
            yield
        finally:
            await ledger.stop()
            await feed.stop()

    app = FastAPI(
        title="caremesh care coordination inbox",
        version="1",
        description=(__doc__ or "").split("\n\n", 1)[1],
        lifespan=lifespan,
    )

    @app.get("/", response_class=HTMLResponse, summary="The inbox page (303 to /login)")
    async def page(request: Request) -> Response:
        who = inbox.signed_in(request)
        if who is None:
            return RedirectResponse("/login", status_code=303)
        coordinator = who.coordinator
        html = inbox_page(
            inbox.lang(request),
            csrf_token(inbox.book.secret, who.nonce),
            coordinator.display_name or coordinator.username,
            coordinator.organisation,
        )
        return inbox.remember_lang(request, HTMLResponse(html))

    @app.get("/login", response_class=HTMLResponse, summary="The sign-in form")
    async def login_form(request: Request) -> Response:
        if inbox.signed_in(request) is not None:
            return RedirectResponse("/", status_code=303)
        return inbox.login_form(request)

    @app.post("/login", summary="Sign in (form: username, password, csrf)")
    async def login(request: Request) -> Response:
        return await inbox.login(request)

    @app.post("/logout", summary="Sign out (form: csrf)")
    async def logout(request: Request) -> Response:
        return await inbox.logout(request)

    @app.get("/static/{name}", summary="The page's script and style sheet")
    async def static(name: str) -> Response:
        media = STATIC_FILES.get(name)
        if media is None:
            return error(404, "not-found")
        return FileResponse(STATIC_DIR / name, media_type=media)

    @app.get("/api/alerts", summary="The organisation's alerts, newest first")
    async def alerts(request: Request) -> Response:
        who = inbox.api_caller(request)
        if isinstance(who, Response):
            return who
        return await inbox.list_alerts(request, who.organisation)

    @app.get("/api/alerts/stream", summary="Server-sent events: new and changed alerts")
    async def stream(request: Request) -> Response:
        who = inbox.api_caller(request)
        if isinstance(who, Response):
            return who
        return StreamingResponse(
            inbox.stream(who),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
        )

    @app.post("/api/alerts/{alert_id}/ack", status_code=202, summary="Acknowledge an alert")
    async def ack(alert_id: str, request: Request) -> Response:
        return await inbox.act(request, alert_id, "ack")

    @app.post("/api/alerts/{alert_id}/dismiss", status_code=202, summary="Dismiss an alert")
    async def dismiss(alert_id: str, request: Request) -> Response:
        return await inbox.act(request, alert_id, "dismiss")

    @app.get("/health", summary="200 once the alerts are read, else 503 (no auth, no PHI)")
    async def health() -> Response:
        ready = feed.ready
        body = {"status": "ok" if ready else "starting", "ready": ready}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics (no auth: counters only, no PHI)")
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

    @app.exception_handler(StarletteHTTPException)
    async def httperror(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "invalid")
        return error(exc.status_code, code)

    @app.exception_handler(RequestValidationError)
    async def requesterror(request: Request, exc: RequestValidationError) -> Response:
        return error(400, "invalid-request", "the request is not well formed")

    @app.exception_handler(Exception)
    async def internalerror(request: Request, exc: Exception) -> Response:
        log.error("inbox request failed: %s", type(exc).__name__)
        return error(500, "internal-error")

    return SecurityHeaders(app)


def run_inbox(settings: Settings) -> int:
    """Serve the inbox on `settings.inbox` host:port until interrupted; returns 0.

    Raises ConfigurationError (before listening) when the session secret or a coordinator's
    password hash is missing or malformed.
    """
    SessionBook.from_settings(settings.inbox)  # fail fast on configuration errors
    producer = AsyncProducer.from_settings(settings.kafka)
    app = create_app(settings, producer, Metrics())
    freeze_startup_objects()
    config = server_config(
        app, settings.inbox.host, settings.inbox.port, timeout_graceful_shutdown=5
    )
    log.info(
        "inbox listening on %s:%d (%d coordinators in %d organisations)",
        settings.inbox.host,
        settings.inbox.port,
        len(settings.inbox.coordinators),
        len({c.organisation for c in settings.inbox.coordinators}),
    )
    try:
        uvicorn.Server(config).run()
    finally:
        producer.close()
    return 0
