"""One consent ledger per worker process, started on first use and shared by every stage."""

from __future__ import annotations

import asyncio

from caremesh.settings import Settings
from caremesh.streams.app import CaremeshApp
from caremesh.streams.ledger import ConsentLedger
from caremesh.topics import CONSENT_EVENTS

_LOCK = asyncio.Lock()


async def ledger_for(app: CaremeshApp, settings: Settings) -> ConsentLedger:
    """The process's ConsentLedger, started on first call."""
    if app.caremesh_ledger is not None:
        return app.caremesh_ledger
    async with _LOCK:
        ledger = app.caremesh_ledger
        if ledger is None:
            ledger = ConsentLedger(settings.kafka, settings.kafka.topic_prefix + CONSENT_EVENTS)
            await ledger.start()
            app.caremesh_ledger = ledger
    return ledger
