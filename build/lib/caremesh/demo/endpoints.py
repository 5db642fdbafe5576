"""Stand-in FHIR endpoints for the demo: one small server answering for every provider.

`PUT|POST /{org}/fhir/{type}[/{id}]` stores nothing but counts what each organisation received
(by `X-Caremesh-Event-Id`, so duplicates show), and `/metrics` exposes the counts. Providers in a
real territory run their own FHIR servers; this one only lets the demo show deliveries.
"""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, generate_latest

log = logging.getLogger(__name__)


def create_app() -> FastAPI:
    """The stand-in endpoint app."""
    registry = CollectorRegistry()
    received = Counter(
        "caremesh_demo_endpoint_received_total",
        "Resources received by a stand-in provider endpoint",
        ["organisation"],
        registry=registry,
    )
    duplicates = Counter(
        "caremesh_demo_endpoint_duplicates_total",
        "Resources received twice (same event id)",
        ["organisation"],
        registry=registry,
    )
    seen: set[str] = set()
    app = FastAPI(title="caremesh demo provider endpoints", docs_url=None, redoc_url=None)

    async def accept(org: str, request: Request) -> Response:
        await request.body()
        event_id = request.headers.get("x-caremesh-event-id", "")
        key = f"{org}\x1f{event_id}"
        if event_id and key in seen:
            duplicates.labels(org).inc()
        else:
            seen.add(key)
            received.labels(org).inc()
        return Response(status_code=201)

    @app.put("/{org}/fhir/{rtype}/{rid}")
    async def put(org: str, rtype: str, rid: str, request: Request) -> Response:
        return await accept(org, request)

    @app.post("/{org}/fhir/{rtype}")
    async def post(org: str, rtype: str, request: Request) -> Response:
        return await accept(org, request)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def run_endpoints(host: str, port: int) -> int:
    """Serve the stand-in endpoints until stopped."""
    uvicorn.run(create_app(), host=host, port=port, log_level="warning", access_log=False)
    return 0
