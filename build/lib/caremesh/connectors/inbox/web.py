"""HTTP helpers of the inbox: security headers, JSON errors, bounded bodies, forms, SSE framing."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qs

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from caremesh.connectors.inbox.pages import SECURITY_HEADERS
from caremesh.connectors.inbox.state import Status
from caremesh.errors import RejectedInputError

MAX_NOTE_CHARS: Final = 4000


class SecurityHeaders:
    """ASGI middleware adding `SECURITY_HEADERS` to every answer (streams included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in self.extra if k not in present
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


def error(status: int, code: str, detail: str = "", **headers: str) -> JSONResponse:
    """A JSON error answer `{"error": code, "detail": ...}` (details carry no values)."""
    body = {"error": code, "detail": detail} if detail else {"error": code}
    return JSONResponse(body, status_code=status, headers=headers or None)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than `limit` bytes."""
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


def action_note(body: bytes) -> str | None:
    """The note of an action body `{"note": str | null}`; RejectedInputError names fields only."""
    try:
        data = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        raise RejectedInputError("invalid-request", "body is not JSON") from None
    if not isinstance(data, dict) or set(data) - {"note"}:
        raise RejectedInputError("invalid-request", 'body is {"note": string or null}')
    note = data.get("note")
    if note is not None and not isinstance(note, str):
        raise RejectedInputError("invalid-request", "note: not a string")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise RejectedInputError("invalid-request", "note: longer than 4000 characters")
    return note.strip() or None if note is not None else None


def sse_event(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event (text/event-stream framing, one `data` line of JSON)."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def read_form(body: bytes) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body as a dict (first value of each field)."""
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items() if v}


RETRY: Final = {"Retry-After": "5"}


def parse_status(value: str | None) -> Status | None:
    """The `status` filter: open, closed or None (anything else is None)."""
    if value == "open":
        return "open"
    if value == "closed":
        return "closed"
    return None
