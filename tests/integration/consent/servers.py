"""Test support for the consent API and delivery tests: real uvicorn servers in threads."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from caremesh.connectors.http.server import server_config


@contextlib.contextmanager
def serve(app: FastAPI, *, lifespan: str = "on") -> Iterator[str]:
    """Run `app` with a real uvicorn server (own thread and loop); yields its base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = server_config(app, "127.0.0.1", port, lifespan=lifespan)  # as the APIs run
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@dataclass(frozen=True)
class Received:
    """One request a stand-in FHIR endpoint got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float


@dataclass
class FhirEndpoint:
    """A provider's FHIR server stand-in: records every request, answers `status` (or 503 until
    `unavailable_until`, a monotonic time)."""

    status: int = 200
    unavailable_until: float = 0.0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer_for(self, now: float) -> int:
        return 503 if now < self.unavailable_until else self.status

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def all(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/fhir/{path:path}", methods=["PUT", "POST"])
        async def receive(path: str, request: Request) -> Response:
            body = await request.body()
            now = time.monotonic()
            status = self.answer_for(now)
            with self.lock:
                self.requests.append(
                    Received(request.method, path, dict(request.headers), body, status, time.time())
                )
            if 200 <= status < 300:
                return Response(body, status, media_type="application/fhir+json")
            return JSONResponse({"error": "SYNTH-ENDPOINT-BODY-MARKER"}, status)

        return app
