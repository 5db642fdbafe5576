"""What every stage shell shares: raw topics, the dead-letter writer, retries, per-event outcome.

Faust acks a message whose agent raised, so a stage never lets an exception escape: a message
that can never be processed goes to `deadletter.v1` (original key and bytes, with an error code,
the stage and its coordinates in headers; never payload in the reason), and a transient failure
(broker, consent state not ready) is retried until it succeeds, never dead-lettered (DESIGN §4).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
import orjson

from caremesh import envelope
from caremesh.errors import ConsentNotReadyError, KafkaUnavailableError, RejectedInputError
from caremesh.metrics import Metrics
from caremesh.settings import Settings
from caremesh.streams.app import CaremeshApp
from caremesh.streams.batch import deadletter_headers
from caremesh.topics import AUDIT, DEADLETTER

log = logging.getLogger(__name__)

Event = faust.EventT[Any]

TRANSIENT = (KafkaUnavailableError, ConsentNotReadyError, asyncio.TimeoutError, ConnectionError)
MAX_BACKOFF = 10.0


def raw_topic(app: CaremeshApp, settings: Settings, name: str) -> faust.TopicT:
    """A catalogue topic with bytes keys and values (no Faust serialisation)."""
    return app.topic(
        settings.kafka.topic_prefix + name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )


def text_headers(event: Event) -> dict[str, str]:
    """The event's Kafka headers as text."""
    raw: Mapping[str, Any] = event.headers or {}
    return {
        k: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for k, v in raw.items()
    }


class StageShell:
    """Runs one stage's handler per event with dead-lettering, retries and metrics."""

    def __init__(self, app: CaremeshApp, settings: Settings, stage: str) -> None:
        self.app = app
        self.stage = stage
        self.metrics: Metrics = app.caremesh_metrics
        self.deadletter = raw_topic(app, settings, DEADLETTER)
        self.audit_topic = raw_topic(app, settings, AUDIT)

    async def audit(self, event_id: str, audit_event: Mapping[str, Any]) -> None:
        """Write one FHIR AuditEvent to audit.v1, keyed by its (stable) id."""
        env = envelope.Envelope(
            event_id, f"urn:caremesh:stage:{self.stage}", envelope.fhir_event_type("AuditEvent")
        )
        await self.audit_topic.send(
            key=event_id.encode(), value=orjson.dumps(audit_event), headers=env.header_map()
        )

    async def dead_letter(self, event: Event, code: str, reason: str) -> None:
        """Write the original record to deadletter.v1 with value-free reason headers."""
        msg = event.message
        headers = dict(event.headers or {})
        reasons = deadletter_headers(
            code,
            self.stage,
            reason,
            topic=str(msg.topic),
            partition=msg.partition,
            offset=msg.offset,
        )
        headers.update({k: v.encode() if isinstance(v, str) else (v or b"") for k, v in reasons})
        await self.deadletter.send(key=event.key, value=event.value, headers=headers)
        self.metrics.rejected.labels(self.stage, code).inc()
        log.info(
            "dead-lettered: stage=%s code=%s topic=%s partition=%s offset=%s",
            self.stage,
            code,
            msg.topic,
            msg.partition,
            msg.offset,
        )

    async def handle(self, event: Event, handler: Callable[[Event], Awaitable[None]]) -> None:
        """Run `handler` on one event until it has an outcome: output, dead letter, or retry."""
        self.metrics.messages_in.labels(self.stage).inc()
        backoff = 0.1
        while True:
            started = time.perf_counter()
            try:
                await handler(event)
            except RejectedInputError as exc:
                await self.dead_letter(event, exc.code, exc.detail)
            except TRANSIENT as exc:
                self.metrics.retries.labels(self.stage).inc()
                log.warning(
                    "transient failure in %s (%s); retrying in %.1fs",
                    self.stage,
                    type(exc).__name__,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            except Exception as exc:  # noqa: BLE001 - nothing may be acked without an outcome
                # The traceback's frames only: an exception's text may quote data.
                log.error(
                    "stage %s failed on topic=%s partition=%s offset=%s (%s)\n%s",
                    self.stage,
                    event.message.topic,
                    event.message.partition,
                    event.message.offset,
                    type(exc).__name__,
                    "".join(traceback.format_tb(exc.__traceback__)),
                )
                await self.dead_letter(
                    event, "stage-error", f"{self.stage} raised {type(exc).__name__}"
                )
            self.metrics.stage_duration.labels(self.stage).observe(time.perf_counter() - started)
            return
