"""The feeder against real sockets: an MLLP ACK server and a FastAPI app served by uvicorn.

Both peers are started by the tests on 127.0.0.1 with an ephemeral port; no caremesh service
and no Kafka broker is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from caremesh.demo.clients import END, control_id_of
from caremesh.demo.feed import Feeder, FeedOptions, FeedTargets
from caremesh.demo.scenario import Event, territory_events
from caremesh.demo.territory import Territory
from caremesh.fhir.hl7v2 import AckCode, build_ack, parse_hl7

START = datetime(2025, 6, 1, tzinfo=UTC)
FAST = FeedOptions(rate=None, follow_schedule=False, concurrency=4, backoff_seconds=0.01)


@pytest.fixture(scope="module")
def territory() -> Territory:
    return Territory.generate(21, patients=40)


@pytest.fixture(scope="module")
def all_events(territory: Territory) -> list[Event]:
    return list(territory_events(territory, START, 1000.0))


@dataclass
class MllpPeer:
    """An MLLP server that answers with caremesh's own ACK builder, as `decide` says."""

    decide: Callable[[bytes, int], tuple[AckCode, str | None] | None]
    """(message, attempt number) → (ACK code, error code), or None to hang up without an ACK."""
    received: list[bytes] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    closed: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                data = await reader.readuntil(END)
                message = data.removeprefix(b"\x0b").removesuffix(END)
                control = control_id_of(message)
                self.attempts[control] += 1
                answer = self.decide(message, self.attempts[control])
                if answer is None:
                    break
                code, error = answer
                if code == "AA":
                    self.received.append(message)
                ack = build_ack(parse_hl7(message), code, error or "", error=error)
                writer.write(b"\x0b" + ack + END)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += 1
            writer.close()


@contextlib.asynccontextmanager
async def mllp_server(peer: MllpPeer) -> AsyncIterator[int]:
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def targets(territory: Territory, *, mllp_port: int = 9, http_port: int = 9) -> FeedTargets:
    base = f"http://127.0.0.1:{http_port}"
    return FeedTargets(
        ingest_url=base,
        consent_url=f"{base}/consent",
        mllp_host="127.0.0.1",
        mllp_port=mllp_port,
        tokens=territory.source_tokens(),
        admin_token=territory.admin_token,
    )


def _by_patient(events: list[Event]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for event in events:
        out[event.patient].append(control_id_of(event.payload))
    return out


async def test_mllp_feed_counts_acks_retries_and_keeps_patient_order(
    territory: Territory, all_events: list[Event]
) -> None:
    mllp = [e for e in all_events if e.channel == "mllp"]
    flaky = {control_id_of(e.payload) for e in mllp[::3]}

    def decide(message: bytes, attempt: int) -> tuple[AckCode, str | None] | None:
        if control_id_of(message) in flaky and attempt == 1:
            return "AE", "kafka-unavailable"  # ERR-3 207: transient, resend
        if b"|ADT^A04^" in message:
            return "AR", "unsupported-message-type"
        return "AA", None

    peer = MllpPeer(decide)
    async with mllp_server(peer) as port:
        feeder = Feeder(targets(territory, mllp_port=port), FAST)
        counters = await feeder.run(mllp)
    counts = counters.snapshot()["mllp"]
    registrations = sum(1 for e in mllp if e.kind == "ed")
    assert registrations > 0
    assert counts.sent == len(mllp)
    assert counts.rejected == registrations
    assert counts.accepted == len(mllp) - registrations
    assert counts.retried == len(flaky)
    assert counts.codes == {"AA": counts.accepted, "AR": registrations}
    assert counts.failed == 0
    assert counts.in_flight == 0
    expected = _by_patient([e for e in mllp if e.kind != "ed"])
    owner = {control: key for key, controls in expected.items() for control in controls}
    arrived: dict[str, list[str]] = defaultdict(list)
    for message in peer.received:
        arrived[owner[control_id_of(message)]].append(control_id_of(message))
    assert arrived == expected  # each patient's messages arrived in their order
    assert peer.connections <= FAST.concurrency


async def test_mllp_feed_reconnects_when_the_peer_hangs_up(
    territory: Territory, all_events: list[Event]
) -> None:
    mllp = [e for e in all_events if e.channel == "mllp"][:20]
    hang_up = control_id_of(mllp[5].payload)

    def decide(message: bytes, attempt: int) -> tuple[AckCode, str | None] | None:
        return None if control_id_of(message) == hang_up and attempt == 1 else ("AA", None)

    peer = MllpPeer(decide)
    async with mllp_server(peer) as port:
        counters = await Feeder(targets(territory, mllp_port=port), FAST).run(mllp)
    counts = counters.snapshot()["mllp"]
    assert (counts.sent, counts.accepted, counts.retried) == (20, 20, 1)
    assert peer.attempts[hang_up] == 2


async def test_mllp_gives_up_after_max_attempts(
    territory: Territory, all_events: list[Event]
) -> None:
    mllp = [e for e in all_events if e.channel == "mllp"][:3]
    peer = MllpPeer(lambda message, attempt: ("AE", "kafka-unavailable"))
    options = replace(FAST, max_attempts=3)
    async with mllp_server(peer) as port:
        counters = await Feeder(targets(territory, mllp_port=port), options).run(mllp)
    counts = counters.snapshot()["mllp"]
    assert (counts.sent, counts.accepted, counts.failed, counts.retried) == (3, 0, 3, 6)
    assert counts.codes == {"AE": 3}


@dataclass
class IngestPeer:
    """A FastAPI stand-in for the ingest and consent APIs: 503 on each key's first attempt."""

    tokens: dict[str, str]
    admin: str
    attempts: Counter[str] = field(default_factory=Counter)
    accepted: list[tuple[str, str, str]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()
        sources = {token: source for source, token in self.tokens.items()}

        async def answer(request: Request, route: str, allowed: set[str]) -> Response:
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            if token not in allowed:
                return Response(status_code=401)
            key = request.headers["idempotency-key"]
            self.attempts[key] += 1
            if self.attempts[key] == 1:
                return Response(status_code=503, headers={"Retry-After": "0"})
            if "Condition" in route:
                return JSONResponse({"resourceType": "OperationOutcome"}, status_code=422)
            self.accepted.append((route, sources.get(token, "admin"), str(request.url.query)))
            return JSONResponse({"messageId": key}, status_code=202)

        @app.post("/fhir")
        async def bundle(request: Request) -> Response:
            return await answer(request, "bundle", set(sources))

        @app.post("/fhir/{resource_type}")
        async def resource(resource_type: str, request: Request) -> Response:
            return await answer(request, resource_type, set(sources))

        @app.post("/consent/Consent")
        async def consent(request: Request) -> Response:
            return await answer(request, "consent", {self.admin})

        @app.post("/consent/Consent/{consent_id}/$withdraw")
        async def withdraw(consent_id: str, request: Request) -> Response:
            return await answer(request, f"withdraw:{consent_id}", {self.admin})

        return app


@contextlib.asynccontextmanager
async def http_server(app: FastAPI) -> AsyncIterator[int]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def test_http_and_consent_feed_retries_503_and_counts(
    territory: Territory, all_events: list[Event]
) -> None:
    events = [e for e in all_events if e.channel != "mllp"]
    per_channel = Counter(e.channel for e in events)
    falls = sum(1 for e in events if e.resource_type == "Condition")
    withdrawals = [e for e in events if e.kind == "withdraw"]
    peer = IngestPeer(territory.source_tokens(), territory.admin_token)
    async with http_server(peer.app()) as port:
        counters = await Feeder(targets(territory, http_port=port), FAST).run(events)
    snap = counters.snapshot()
    for channel, count in per_channel.items():
        counts = snap[channel]
        rejected = falls if channel == "http-resource" else 0
        assert (counts.sent, counts.retried) == (count, count)
        assert (counts.accepted, counts.rejected) == (count - rejected, rejected)
    assert snap["mllp"].sent == 0
    assert counters.total().codes.get("422", 0) == falls
    sources = {source for route, source, _ in peer.accepted if route == "bundle"}
    assert sources == {s.id for s in territory.sources}
    withdrawn = {(route, query) for route, _, query in peer.accepted if route.startswith("with")}
    assert withdrawn == {(f"withdraw:{e.consent_id}", f"patient={e.patient}") for e in withdrawals}


async def test_http_feed_counts_unreachable_service_as_failed(territory: Territory) -> None:
    event = next(e for e in territory_events(territory, START, 1.0) if e.channel == "http-bundle")
    options = replace(FAST, max_attempts=2)
    with socket.socket() as probe:  # a port nobody listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        counters = await Feeder(targets(territory, http_port=port), options).run([event])
    counts = counters.snapshot()["http-bundle"]
    assert (counts.sent, counts.failed, counts.retried) == (1, 1, 1)
    assert counts.codes == {"connect-error": 1}


async def test_schedule_and_rate_hold_events_back(
    territory: Territory, all_events: list[Event]
) -> None:
    mllp = [e for e in all_events if e.channel == "mllp"][:6]
    scheduled = [replace(e, due=0.1 * n) for n, e in enumerate(mllp)]
    peer = MllpPeer(lambda message, attempt: ("AA", None))
    loop = asyncio.get_running_loop()
    async with mllp_server(peer) as port:
        began = loop.time()
        options = replace(FAST, follow_schedule=True)
        await Feeder(targets(territory, mllp_port=port), options).run(scheduled)
        on_schedule = loop.time() - began
        began = loop.time()
        await Feeder(targets(territory, mllp_port=port), replace(FAST, rate=20.0)).run(mllp)
        rated = loop.time() - began
    assert on_schedule >= 0.5  # the last event is due 0.5 s after the start
    assert rated >= 0.2  # 6 events at 20/s: at least 4 intervals of 0.05 s after a burst of 2


async def test_cancelling_the_feed_closes_its_connections(
    territory: Territory, all_events: list[Event]
) -> None:
    mllp = [e for e in all_events if e.channel == "mllp"]
    never: asyncio.Event = asyncio.Event()

    class Silent(MllpPeer):
        async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            with contextlib.suppress(ConnectionError):
                await reader.read()  # never answers; returns at EOF
            self.closed += 1
            writer.close()
            never.set()

    peer = Silent(lambda message, attempt: None)
    async with mllp_server(peer) as port:
        feeder = Feeder(targets(territory, mllp_port=port), replace(FAST, timeout_seconds=60))
        task = asyncio.create_task(feeder.run(mllp))
        while peer.connections < FAST.concurrency:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(never.wait(), 5)
        while peer.closed < peer.connections:
            await asyncio.sleep(0.01)
    assert feeder.counters.snapshot()["mllp"].accepted == 0
    assert feeder.counters.snapshot()["mllp"].in_flight == FAST.concurrency
