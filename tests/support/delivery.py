"""Test support: FHIR delivery running in the test's event loop, and waiting for what it did."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from caremesh.connectors.fhir_delivery import FhirDelivery
from caremesh.kafka.io import AsyncProducer
from caremesh.metrics import Metrics
from caremesh.settings import Settings


@contextlib.asynccontextmanager
async def delivering(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[FhirDelivery]:
    """FhirDelivery for `settings`' organisations, cancelled and its producer closed on exit."""
    producer = AsyncProducer(settings.kafka.bootstrap_servers)
    delivery = FhirDelivery(settings, producer, metrics or Metrics())
    task = asyncio.create_task(delivery.run())
    try:
        yield delivery
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        producer.close(timeout=10)


async def until(
    predicate: Callable[[], object], timeout: float, *, every: float = 0.1, blocking: bool = False
) -> bool:
    """Wait until `predicate()` is true or `timeout` passes; its last verdict. A `blocking`
    predicate (an HTTP call to a server) runs in a thread so the event loop keeps delivering."""

    async def check() -> bool:
        return bool(await asyncio.to_thread(predicate) if blocking else predicate())

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(every)
    return await check()
