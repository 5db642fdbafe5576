"""The demo's senders: FHIR ingest over HTTP, the consent API, and HL7 v2 over MLLP.

Each `send` makes one attempt and returns a `SendResult` (a value, never an exception for what
the peer answered or for a broken connection): `accepted`, `rejected`, or `retry` for what may
succeed later (HTTP 429/502/503/504, connection errors, timeouts, MLLP AE with ERR-3 207, the
HL7 v2.5 "application internal error" caremesh answers when Kafka did not acknowledge). The
feeder decides about retries. Nothing here logs: payloads, identifiers and tokens stay out of
every log line.

MLLP framing follows HL7 v2 MLLP (Minimal Lower Layer Protocol, release 2): 0x0B, the message,
0x1C 0x0D; one message in flight per connection, the next sent after its ACK.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

import httpx

from caremesh.demo.scenario import Event

START: Final = b"\x0b"
END: Final = b"\x1c\x0d"
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
FHIR_JSON: Final = "application/fhir+json; fhirVersion=4.0"

Outcome = Literal["accepted", "rejected", "retry"]


@dataclass(frozen=True, slots=True)
class SendResult:
    """One attempt's outcome and the peer's answer code (`202`, `422`, `AA`, `AE`, `timeout`...)."""

    outcome: Outcome
    code: str
    retry_after: float | None = None


def http_result(response: httpx.Response) -> SendResult:
    """The outcome of an HTTP answer: 2xx accepted, 429/502/503/504 retry, others rejected."""
    status = response.status_code
    if 200 <= status < 300:
        return SendResult("accepted", str(status))
    if status in RETRY_STATUSES:
        return SendResult("retry", str(status), _retry_after(response.headers.get("retry-after")))
    return SendResult("rejected", str(status))


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


async def _post(
    http: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    params: Mapping[str, str] | None = None,
) -> SendResult:
    try:
        response = await http.post(url, content=body, headers=dict(headers), params=params)
    except httpx.TimeoutException:
        return SendResult("retry", "timeout")
    except httpx.TransportError:
        return SendResult("retry", "connect-error")
    return http_result(response)


class IngestClient:
    """`POST {base}/fhir` (Bundles) and `POST {base}/fhir/{type}` (resources) as a source."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, tokens: Mapping[str, str]) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._tokens = dict(tokens)

    def url(self, event: Event) -> str:
        """Where the event goes."""
        if event.channel == "http-bundle":
            return f"{self._base}/fhir"
        return f"{self._base}/fhir/{event.resource_type}"

    async def send(self, event: Event) -> SendResult:
        """One attempt; an event of a source without a token is rejected without a request."""
        token = self._tokens.get(event.source)
        if token is None:
            return SendResult("rejected", "no-token")
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": FHIR_JSON,
            "Idempotency-Key": event.idempotency_key,
        }
        return await _post(self._http, self.url(event), event.payload, headers)


class ConsentClient:
    """The consent API calls, kept together so their paths can follow the API.

    A Consent is `POST {base}{UPSERT_PATH}`; a withdrawal is `POST {base}{WITHDRAW_PATH}` with
    the consent id in the path, `?patient=<patient key>` and the caremesh withdrawal record
    (`caremesh.consent.withdrawal_json`) as body. Both carry the administrator's bearer token.
    """

    UPSERT_PATH: Final = "/Consent"
    WITHDRAW_PATH: Final = "/Consent/{id}/$withdraw"

    def __init__(self, http: httpx.AsyncClient, base_url: str, admin_token: str) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._token = admin_token

    def request(self, event: Event) -> tuple[str, dict[str, str] | None, str]:
        """(url, query parameters, content type) of a consent event."""
        if event.consent_id:
            url = self._base + self.WITHDRAW_PATH.format(id=event.consent_id)
            return url, {"patient": event.patient}, "application/json"
        return self._base + self.UPSERT_PATH, None, FHIR_JSON

    async def send(self, event: Event) -> SendResult:
        """One attempt."""
        url, params, content_type = self.request(event)
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Content-Type": content_type,
            "Idempotency-Key": event.idempotency_key,
        }
        return await _post(self._http, url, event.payload, headers, params)


def frame(message: bytes) -> bytes:
    """An MLLP frame."""
    return START + message + END


def read_ack(frame_bytes: bytes) -> tuple[str, str, str]:
    """(MSA-1 acknowledgment code, MSA-2 control id, ERR-3 code) of an ACK frame or message."""
    text = frame_bytes.removeprefix(START).removesuffix(END).decode("latin-1")
    field = text[3] if text.startswith("MSH") and len(text) > 3 else "|"
    code = control = error = ""
    for segment in text.replace("\n", "\r").split("\r"):
        parts = segment.split(field)
        if parts[0] == "MSA":
            code = parts[1] if len(parts) > 1 else ""
            control = parts[2] if len(parts) > 2 else ""
        elif parts[0] == "ERR" and len(parts) > 3:
            component = text[4] if len(text) > 4 else "^"
            error = parts[3].split(component)[0]
    return code, control, error


def control_id_of(message: bytes) -> str:
    """MSH-10 of a message."""
    head = message.split(b"\r", 1)[0].decode("latin-1")
    parts = head.split(head[3]) if len(head) > 3 else []
    return parts[9] if len(parts) > 9 else ""


class MllpClient:
    """One MLLP connection, opened on first use and after a failure; one message in flight."""

    def __init__(self, host: str, port: int, *, timeout: float = 10.0) -> None:
        self._host = host
        self._port = port
        self._timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, message: bytes) -> SendResult:
        """Send one message, await its ACK: AA accepted, AE 207 retry, other AE/AR rejected."""
        try:
            async with asyncio.timeout(self._timeout):
                if self._writer is None or self._reader is None:
                    self._reader, self._writer = await asyncio.open_connection(
                        self._host, self._port
                    )
                self._writer.write(frame(message))
                await self._writer.drain()
                answer = await self._reader.readuntil(END)
        except TimeoutError:
            await self.close()
            return SendResult("retry", "timeout")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await self.close()
            return SendResult("retry", "connect-error")
        code, control, error = read_ack(answer)
        if control != control_id_of(message):
            await self.close()  # out of step with the peer: start again on a new connection
            return SendResult("retry", "ack-mismatch")
        if code in ("AA", "CA"):
            return SendResult("accepted", code)
        if code in ("AE", "CE") and error == "207":
            return SendResult("retry", code)
        return SendResult("rejected", code or "no-msa")

    async def close(self) -> None:
        """Close the connection, if one is open."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
