"""What caremesh's own HTTP services share: bearer tokens, OperationOutcome answers, uvicorn.

The OperationOutcome body is `connectors.outcome.operation_outcome` (FHIR R4/R5
OperationOutcome); this module adds the status, the error handlers that turn FastAPI's own
refusals (404, 405, malformed parameters, unexpected exceptions) into value-free outcomes, and a
uvicorn server configured without access logs (URLs may carry patient keys).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from typing import Final

import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from caremesh.connectors.outcome import http_status, operation_outcome

log = logging.getLogger(__name__)

FHIR_JSON: Final = "application/fhir+json"
CHALLENGE: Final[Mapping[str, str]] = {"WWW-Authenticate": 'Bearer realm="caremesh"'}


class TokenTable:
    """Static bearer tokens by holder name, compared in constant time."""

    def __init__(self, tokens: Mapping[str, SecretStr]) -> None:
        self._tokens = [(name, s.get_secret_value().encode()) for name, s in tokens.items()]

    def __len__(self) -> int:
        return len(self._tokens)

    def holder(self, authorization: str | None) -> str | None:
        """The name whose token the `Authorization: Bearer` header carries, or None."""
        scheme, _, token = (authorization or "").partition(" ")
        given = token.strip().encode()
        if scheme.lower() != "bearer" or not given:
            return None
        found: str | None = None
        for name, expected in self._tokens:  # compare with every token: timing tells nothing
            if hmac.compare_digest(given, expected) and found is None:
                found = name
        return found


def outcome_response(
    code: str,
    detail: str,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An OperationOutcome answer; `detail` must be value-free (codes, element paths)."""
    return Response(
        orjson.dumps(operation_outcome(code, detail)),
        status_code=status if status is not None else http_status(code),
        media_type=FHIR_JSON,
        headers=dict(headers) if headers else None,
    )


def unauthorized() -> Response:
    """401 with a Bearer challenge."""
    return outcome_response("unauthorized", "a valid bearer token is required", 401, CHALLENGE)


def install_error_handlers(app: FastAPI, component: str) -> None:
    """Answer routing errors, malformed parameters and crashes with value-free outcomes."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code)
        if code is None:
            return outcome_response("invalid-request", f"HTTP {exc.status_code}", exc.status_code)
        return outcome_response(code, "no such operation")

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError) -> Response:
        where = sorted({".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()})
        return outcome_response("invalid-request", "bad parameters: " + ", ".join(where), 400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("%s request failed: %s", component, type(exc).__name__)
        return outcome_response("internal-error", "the request could not be processed", 500)


def server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for `app`: no access log (URLs may carry patient keys), no banner."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        server_header=False,
        lifespan="on",
    )
    return uvicorn.Server(config)
