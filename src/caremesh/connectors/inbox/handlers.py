"""The inbox's request logic: sign-in and sign-out, the scoped alert list and stream, actions.

Routes (`app`) call these methods; every answer about alerts is scoped to the caller's
organisation, and an action is answered only after Kafka acknowledged both the action and its
audit record. The JSON API's caller is a signed-in coordinator (session cookie, CSRF token on
actions) or, when `CAREMESH_OIDC__*` is configured, the holder of an OIDC bearer token with the
`coordinator` role whose organisation is the token's `CAREMESH_OIDC__ORGANISATION_CLAIM`
(`caremesh.connectors.http.auth`; a bearer request carries no cookie, so it needs no CSRF token).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from caremesh import envelope, topics
from caremesh.audit.events import INBOX_OBSERVER, action_audit_event, decision_audit_event
from caremesh.connectors.http.auth import ROUTE_ROLES, BearerAuth
from caremesh.connectors.inbox.actions import (
    ACTION_EVENT_TYPE,
    INBOX_SOURCE,
    action_message_id,
    audit_event_id,
    coordinator_action,
)
from caremesh.connectors.inbox.auth import csrf_ok, csrf_token, new_nonce
from caremesh.connectors.inbox.context import (
    PURPOSE,
    WITHHELD_UNAVAILABLE,
    card_context,
    treat_query,
)
from caremesh.connectors.inbox.feed import AlertFeed
from caremesh.connectors.inbox.i18n import LANG_COOKIE, LANG_PARAM, Lang, as_lang, choose_lang
from caremesh.connectors.inbox.pages import login_page
from caremesh.connectors.inbox.sessions import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SessionBook,
    SignedIn,
)
from caremesh.connectors.inbox.state import SEVERITIES, InboxAlert
from caremesh.connectors.inbox.web import (
    RETRY,
    action_note,
    error,
    parse_status,
    read_body,
    read_form,
    sse_event,
)
from caremesh.consent import evaluate
from caremesh.consent.policy import consent_policy
from caremesh.envelope import H_FHIR_RELEASE, Envelope, fhir_event_type
from caremesh.errors import (
    AuthRefusedError,
    ConsentNotReadyError,
    KafkaUnavailableError,
    RejectedInputError,
)
from caremesh.kafka.io import AsyncProducer, Output
from caremesh.metrics import Metrics
from caremesh.pathways.alert import action_value
from caremesh.settings import Settings
from caremesh.tables.consent_ledger import ConsentLedger

log = logging.getLogger(__name__)

COMPONENT: Final = "inbox"
MAX_FORM_BYTES: Final = 4096
MAX_JSON_BYTES: Final = 16 * 1024
_Seen = tuple[str, str, str, tuple[str, ...]]
"""A consent decision as audited: patient key, organisation, outcome, consent ids."""


@dataclass(frozen=True, slots=True)
class ApiCaller:
    """Who calls the JSON API: a session's coordinator or a bearer token's."""

    organisation: str
    username: str
    session: SignedIn | None = None
    expires: float | None = None
    """A bearer token's `exp` (epoch seconds)."""


class InboxHandlers:
    """The state and request logic behind the routes."""

    def __init__(
        self,
        settings: Settings,
        producer: AsyncProducer,
        metrics: Metrics,
        feed: AlertFeed,
        send_timeout: float,
        *,
        ledger: ConsentLedger,
    ) -> None:
        self.ledger = ledger
        self._audited: set[_Seen] = set()
        """Decisions already audited by this process (kept in memory only)."""
        self.policy = consent_policy(settings.consent)
        self.book = SessionBook.from_settings(settings.inbox)
        self.cookie_secure = settings.inbox.secure_cookies
        self.keepalive = settings.inbox.keepalive_seconds
        prefix = settings.kafka.topic_prefix
        self.actions_topic = prefix + topics.PATHWAY_ACTIONS
        self.audit_topic = prefix + topics.AUDIT
        self.producer = producer
        self.metrics = metrics
        self.feed = feed
        self.send_timeout = send_timeout
        self._in_flight: set[str] = set()
        self.bearer = BearerAuth.from_settings(settings.oidc) if settings.oidc.issuer else None

    def unauthorized(self, code: str = "unauthorized", detail: str = "sign in first") -> Response:
        """401, with a Bearer challenge when bearer tokens are accepted."""
        if self.bearer is None:
            return error(401, code, detail)
        return error(401, code, detail, **{"WWW-Authenticate": 'Bearer realm="caremesh"'})

    def api_caller(self, request: Request) -> ApiCaller | Response:
        """The JSON API's caller, or the 401/403 answer (codes only, never a claim value)."""
        authorization = request.headers.get("authorization")
        if authorization is None:
            who = self.signed_in(request)
            if who is None:
                return self.unauthorized()
            coordinator = who.coordinator
            return ApiCaller(coordinator.organisation, coordinator.username, who)
        if self.bearer is None:
            return self.unauthorized("invalid-token", "bearer tokens are not accepted")
        try:
            caller = self.bearer.authorize(authorization, ROUTE_ROLES["inbox:api"])
        except AuthRefusedError as exc:
            self.metrics.rejected.labels(COMPONENT, exc.code).inc()
            if exc.status == 401:
                return self.unauthorized(exc.code, exc.detail)
            return error(exc.status, exc.code, exc.detail)
        if not caller.organisation:
            self.metrics.rejected.labels(COMPONENT, "no-organisation").inc()
            return error(403, "no-organisation", "the token names no organisation")
        return ApiCaller(caller.organisation, caller.name, None, caller.expires)

    def still_valid(self, caller: ApiCaller, now: float) -> bool:
        """Whether the caller's session or token is still valid (for long-lived streams)."""
        if caller.session is not None:
            return self.book.still_valid(caller.session, now)
        return caller.expires is None or caller.expires > now

    def signed_in(self, request: Request) -> SignedIn | None:
        """The request's valid session, or None."""
        return self.book.check(request.cookies.get(SESSION_COOKIE), time.time())

    def set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=self.cookie_secure,
            httponly=True,
            samesite="strict",
        )

    def lang(self, request: Request) -> Lang:
        """The request's language (query `lang`, then the language cookie, Accept-Language)."""
        return choose_lang(
            request.query_params.get(LANG_PARAM),
            request.cookies.get(LANG_COOKIE),
            request.headers.get("accept-language"),
        )

    def remember_lang(self, request: Request, response: Response) -> Response:
        """`response`, keeping the language the page's switch chose (a one-year cookie)."""
        chosen = as_lang(request.query_params.get(LANG_PARAM))
        if chosen is not None:
            self.set_cookie(response, LANG_COOKIE, chosen, 365 * 24 * 3600)
        return response

    def login_form(self, request: Request, error: str = "", status: int = 200) -> Response:
        """The sign-in page; `error` is a message catalogue key or empty."""
        nonce = new_nonce()
        lang = self.lang(request)
        page = login_page(lang, csrf_token(self.book.secret, "login:" + nonce), error)
        response = HTMLResponse(page, status_code=status)
        self.set_cookie(response, LOGIN_COOKIE, nonce, 3600)
        return self.remember_lang(request, response)

    async def login(self, request: Request) -> Response:
        body = await read_body(request, MAX_FORM_BYTES)
        if body is None:
            return self.login_form(request, "error_too_large", 413)
        form = read_form(body)
        nonce = request.cookies.get(LOGIN_COOKIE)
        if not csrf_ok(self.book.secret, "login:" + nonce if nonce else None, form.get("csrf")):
            self.metrics.rejected.labels(COMPONENT, "csrf").inc()
            return self.login_form(request, "error_expired", 403)
        found = await asyncio.to_thread(
            self.book.authenticate, form.get("username", ""), form.get("password", "")
        )
        if found is None:
            self.metrics.rejected.labels(COMPONENT, "sign-in-refused").inc()
            log.info("inbox sign-in refused")
            return self.login_form(request, "error_refused", 401)
        token = self.book.open(found, time.time())
        response = RedirectResponse("/", status_code=303)
        self.set_cookie(response, SESSION_COOKIE, token, int(self.book.lifetime))
        response.delete_cookie(LOGIN_COOKIE, path="/")
        log.info("inbox sign-in: organisation=%s", found.organisation)
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        who = self.signed_in(request)
        if who is None:
            return response
        body = await read_body(request, MAX_FORM_BYTES) or b""
        form = read_form(body)
        if not csrf_ok(self.book.secret, who.nonce, form.get("csrf")):
            return error(403, "csrf", "the form's CSRF token is missing or wrong")
        self.book.revoke(request.cookies.get(SESSION_COOKIE), time.time())
        return response

    def card(self, alert: InboxAlert, audits: list[tuple[_Seen, Output]]) -> dict[str, Any]:
        """An alert's JSON with its patient `context`, as consent permits (never logged).

        The AuditEvent of a decision this process has not yet audited is appended to `audits`;
        the caller writes them (`write_audits`) before anything is answered.
        """
        now = datetime.now(UTC)
        query = treat_query(alert.patient_key, alert.organisation, now)
        decision = evaluate(self.ledger.consents(alert.patient_key), query, self.policy)
        self.metrics.consent_decisions.labels(COMPONENT, PURPOSE, decision.outcome.value).inc()
        seen = (alert.patient_key, alert.organisation, decision.outcome.value, decision.consent_ids)
        if seen not in self._audited:
            # The same decision has the same id, so concurrent requests write one event.
            event_id = envelope.child_message_id(
                f"inbox-context:{alert.patient_key}:{alert.organisation}",
                f"{decision.outcome.value}:{','.join(decision.consent_ids)}",
            )
            event = decision_audit_event(
                query, decision, event_id=event_id, recorded=now, observer=INBOX_OBSERVER
            )
            env = Envelope(
                event_id,
                INBOX_SOURCE,
                fhir_event_type("AuditEvent"),
                time=now,
                extra={H_FHIR_RELEASE: "R4"},
            )
            value = orjson.dumps(event)
            audits.append((seen, Output(self.audit_topic, event_id.encode(), value, env.headers())))
        out = alert.to_json()
        out["context"] = card_context(decision, self.feed.patients.get(alert.patient_key), now)
        return out

    async def write_audits(self, audits: list[tuple[_Seen, Output]]) -> bool:
        """Write the decisions' AuditEvents; False (nothing may be shown) when Kafka did not ack."""
        if not audits:
            return True
        records = [record for _, record in audits]
        try:
            await asyncio.wait_for(self.producer.send_all(records), self.send_timeout)
        except (KafkaUnavailableError, TimeoutError):
            self.metrics.retries.labels(COMPONENT).inc()
            log.warning("inbox consent decisions not audited: %d records", len(audits))
            return False
        self._audited.update(seen for seen, _ in audits)
        return True

    async def cards(self, alerts: list[InboxAlert]) -> list[dict[str, Any]] | None:
        """The alerts' JSON with their context, once the decisions are audited (else None)."""
        audits: list[tuple[_Seen, Output]] = []
        found = [self.card(a, audits) for a in alerts]
        return found if await self.write_audits(audits) else None

    async def consent_caught_up(self) -> bool:
        """Whether the consent state includes every ledger record written until now."""
        try:
            await self.ledger.wait_caught_up(timeout=self.send_timeout)
        except ConsentNotReadyError:
            return False
        return True

    async def streamed_card(self, alert: InboxAlert) -> dict[str, Any]:
        """An alert for the event stream: with its context when consent state and audit allow."""
        if await self.consent_caught_up():
            shown = await self.cards([alert])
            if shown:
                return shown[0]
        return {**alert.to_json(), "context": dict(WITHHELD_UNAVAILABLE)}

    async def list_alerts(self, request: Request, org: str) -> Response:
        q = request.query_params
        status = q.get("status") or None
        severity = q.get("severity") or None
        if status not in (None, "open", "closed"):
            return error(400, "invalid-request", "status is open or closed")
        if severity is not None and severity not in SEVERITIES:
            return error(400, "invalid-request", "severity is low, medium, high or critical")
        if not self.feed.ready or not await self.consent_caught_up():
            return error(503, "not-ready", "the inbox is still reading alerts", **RETRY)
        found = self.feed.state.select(
            org,
            pathway=q.get("pathway") or None,
            severity=severity,
            status=parse_status(status),
        )
        shown = await self.cards(found)
        if shown is None:
            return error(503, "kafka-unavailable", "the inbox cannot audit now", **RETRY)
        return JSONResponse(
            {
                "organisation": org,
                "alerts": shown,
                "pathways": self.feed.state.pathways(org),
            }
        )

    async def stream(self, caller: ApiCaller) -> AsyncIterator[bytes]:
        sub = self.feed.subscribe()
        try:
            yield b"retry: 3000\n: connected\n\n"
            last = time.monotonic()
            org = caller.organisation
            while not sub.overflowed and self.still_valid(caller, time.time()):
                wait = max(0.05, self.keepalive - (time.monotonic() - last))
                try:
                    alert = await asyncio.wait_for(sub.queue.get(), wait)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    last = time.monotonic()
                    continue
                if alert.organisation == org:
                    yield sse_event("alert", await self.streamed_card(alert))
                    last = time.monotonic()
                elif time.monotonic() - last >= self.keepalive:
                    yield b": keep-alive\n\n"
                    last = time.monotonic()
        finally:
            self.feed.unsubscribe(sub)

    async def act(
        self, request: Request, alert_id: str, kind: Literal["ack", "dismiss"]
    ) -> Response:
        started = time.perf_counter()
        try:
            return await self._act(request, alert_id, kind)
        finally:
            self.metrics.stage_duration.labels(COMPONENT).observe(time.perf_counter() - started)

    async def _act(
        self, request: Request, alert_id: str, kind: Literal["ack", "dismiss"]
    ) -> Response:
        who = self.api_caller(request)
        if isinstance(who, Response):
            return who
        session = who.session
        if session is not None and not csrf_ok(
            self.book.secret, session.nonce, request.headers.get("x-csrf-token")
        ):
            self.metrics.rejected.labels(COMPONENT, "csrf").inc()
            return error(403, "csrf", "the X-CSRF-Token header is missing or wrong")
        media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if media != "application/json":
            return error(415, "unsupported-media-type", "send application/json")
        body = await read_body(request, MAX_JSON_BYTES)
        if body is None:
            return error(413, "too-large", f"the body exceeds {MAX_JSON_BYTES} bytes")
        try:
            note = action_note(body)
        except RejectedInputError as exc:
            self.metrics.rejected.labels(COMPONENT, exc.code).inc()
            return error(400, exc.code, exc.detail)
        if not self.feed.ready:
            return error(503, "not-ready", "the inbox is still reading alerts", **RETRY)
        alert = self.feed.state.get(alert_id, who.organisation)
        if alert is None:
            return error(404, "not-found", "no such alert")
        if alert.closure is not None or alert_id in self._in_flight:
            return error(409, "already-closed", "the alert is already closed")
        self._in_flight.add(alert_id)
        try:
            closed = await self._write(alert, kind, who.username, note)
        except (KafkaUnavailableError, TimeoutError):
            self.metrics.retries.labels(COMPONENT).inc()
            log.warning("inbox action not acknowledged by Kafka: action=%s", kind)
            return error(503, "kafka-unavailable", "not saved; retry later", **RETRY)
        finally:
            self._in_flight.discard(alert_id)
        self.metrics.messages_out.labels(COMPONENT).inc()
        log.info("inbox action written: action=%s organisation=%s", kind, alert.organisation)
        cards = await self.cards([closed])
        card = cards[0] if cards else {**closed.to_json(), "context": dict(WITHHELD_UNAVAILABLE)}
        return JSONResponse({"alert": card}, status_code=202)

    async def _write(
        self,
        alert: InboxAlert,
        kind: Literal["ack", "dismiss"],
        coordinator: str,
        note: str | None,
    ) -> InboxAlert:
        now = datetime.now(UTC)
        action = coordinator_action(kind, alert, coordinator=coordinator, note=note, at=now)
        action_id = action_message_id(action)
        event_id = audit_event_id(action_id)
        audit = action_audit_event(action, alert.patient_key, event_id=event_id, recorded=now)
        action_env = Envelope(
            action_id, INBOX_SOURCE, ACTION_EVENT_TYPE, time=now, content_type="application/json"
        )
        audit_env = Envelope(
            event_id,
            INBOX_SOURCE,
            fhir_event_type("AuditEvent"),
            time=now,
            extra={H_FHIR_RELEASE: "R4"},
        )
        records = [
            Output(
                self.actions_topic,
                alert.patient_key.encode(),
                action_value(action),
                action_env.headers(),
            ),
            Output(self.audit_topic, event_id.encode(), orjson.dumps(audit), audit_env.headers()),
        ]
        await asyncio.wait_for(self.producer.send_all(records), self.send_timeout)
        # The feed may already have read the action back from Kafka; either way it is closed now.
        return (
            self.feed.apply(action)
            or self.feed.state.get(alert.alert_id, alert.organisation)
            or alert
        )
