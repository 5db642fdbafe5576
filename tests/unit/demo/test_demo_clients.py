"""The demo's senders, one attempt at a time: requests they make, answers they understand."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from caremesh.demo.clients import (
    ConsentClient,
    IngestClient,
    SendResult,
    control_id_of,
    frame,
    http_result,
    read_ack,
)
from caremesh.demo.feed import shard
from caremesh.demo.scenario import Event
from caremesh.fhir.hl7v2 import build_ack, parse_hl7

MESSAGE = (
    b"MSH|^~\\&|LAB|src-a|CAREMESH|TERRITORY|20250601080000+0000||ORU^R01^ORU_R01|CTRL0001|P|2.5\r"
    b"PID|1||L1^^^src-a&1.2.250.1.999.1.1&ISO^PI\r"
)
AT = datetime(2025, 6, 1, tzinfo=UTC)


def _event(channel: str, **kw: str) -> Event:
    fields = {"source": "src-a", "kind": "k", "idempotency_key": "demo-1", "patient": "999000"}
    fields |= kw
    return Event(
        at=AT,
        due=0.0,
        channel=channel,  # type: ignore[arg-type]
        payload=b'{"resourceType":"Observation"}',
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (202, {}, SendResult("accepted", "202")),
        (200, {}, SendResult("accepted", "200")),
        (400, {}, SendResult("rejected", "400")),
        (401, {}, SendResult("rejected", "401")),
        (422, {}, SendResult("rejected", "422")),
        (500, {}, SendResult("rejected", "500")),
        (503, {"Retry-After": "2"}, SendResult("retry", "503", 2.0)),
        (503, {"Retry-After": "soon"}, SendResult("retry", "503", None)),
        (429, {}, SendResult("retry", "429")),
        (504, {}, SendResult("retry", "504")),
    ],
)
def test_http_result(status: int, headers: dict[str, str], expected: SendResult) -> None:
    assert http_result(httpx.Response(status, headers=headers)) == expected


@pytest.mark.parametrize(
    ("code", "error", "expected"),
    [
        ("AA", None, ("AA", "CTRL0001", "")),
        ("AE", "kafka-unavailable", ("AE", "CTRL0001", "207")),
        ("AE", "malformed", ("AE", "CTRL0001", "102")),
        ("AR", "unsupported-message-type", ("AR", "CTRL0001", "200")),
    ],
)
def test_read_ack_of_caremesh_acks(code: str, error: str | None, expected: tuple[str, ...]) -> None:
    ack = build_ack(parse_hl7(MESSAGE), code, error or "", error=error)  # type: ignore[arg-type]
    assert read_ack(frame(ack)) == expected


def test_control_id_and_frame() -> None:
    assert control_id_of(MESSAGE) == "CTRL0001"
    assert frame(b"x") == b"\x0bx\x1c\r"


async def test_ingest_client_sends_as_the_source() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = IngestClient(http, "http://ingest/", {"src-a": "tok-a"})
        assert (await client.send(_event("http-bundle"))).outcome == "accepted"
        assert (
            await client.send(_event("http-resource", resource_type="Observation"))
        ).code == "202"
        assert await client.send(_event("http-bundle", source="nobody")) == SendResult(
            "rejected", "no-token"
        )
    assert [str(r.url) for r in seen] == ["http://ingest/fhir", "http://ingest/fhir/Observation"]
    for request in seen:
        assert request.headers["authorization"] == "Bearer tok-a"
        assert request.headers["content-type"].startswith("application/fhir+json")
        assert request.headers["idempotency-key"] == "demo-1"
        assert request.content == b'{"resourceType":"Observation"}'


async def test_ingest_client_turns_connection_errors_into_retries() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = IngestClient(http, "http://ingest", {"src-a": "tok-a"})
        assert await client.send(_event("http-bundle")) == SendResult("retry", "connect-error")


def test_consent_client_paths() -> None:
    client = ConsentClient(httpx.AsyncClient(), "http://consent/", "admin")
    upsert = client.request(_event("consent", resource_type="Consent"))
    assert upsert == ("http://consent/Consent", None, "application/fhir+json; fhirVersion=4.0")
    withdrawal = client.request(_event("consent", consent_id="demo-c1"))
    assert withdrawal == (
        "http://consent/Consent/demo-c1/$withdraw",
        {"patient": "999000"},
        "application/json",
    )


def test_shard_keeps_a_patient_on_one_worker() -> None:
    one = _event("mllp", patient="999111")
    two = _event("consent", patient="999111", idempotency_key="other")
    assert shard(one, 8) == shard(two, 8)
    assert {shard(_event("mllp", patient=f"999{n}"), 8) for n in range(100)} == set(range(8))
