"""`caremesh fhir-delivery` leaves its start-up objects out of later garbage collections, like
every other long-running service (caremesh.heap)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from caremesh.connectors import fhir_delivery
from caremesh.metrics import Metrics
from caremesh.settings import Settings


class _Server:
    """Stands in for uvicorn: records what the collector sees when serving starts."""

    def __init__(self) -> None:
        self.frozen_at_start: int | None = None
        self.app_frozen = False

    async def serve(self) -> None:
        self.frozen_at_start = gc.get_freeze_count()


def test_delivery_freezes_what_start_up_built_before_serving(
    unfrozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _Server()
    apps: list[object] = []

    def make_server(app: object, host: str, port: int) -> _Server:
        apps.append(app)
        fake.app_frozen = not any(o is app for o in gc.get_objects())
        return fake

    async def idle(self: fhir_delivery.FhirDelivery) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(fhir_delivery, "server", make_server)
    monkeypatch.setattr(fhir_delivery.FhirDelivery, "run", idle)

    asyncio.run(fhir_delivery.serve_delivery(Settings(), producer=None, metrics=Metrics()))  # type: ignore[arg-type]

    assert apps, "the HTTP server was not started"
    assert fake.frozen_at_start is not None
    assert fake.frozen_at_start > 0
    assert fake.app_frozen  # the app built at start-up is out of the collected generations
