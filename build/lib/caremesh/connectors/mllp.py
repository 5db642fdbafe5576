"""The HL7 v2 MLLP listener: frames in, raw messages to ingest.hl7v2.v1, then an HL7 ACK.

One asyncio task per connection reads frames (`mllp_framing`) and handles them strictly in
order: the ACK of a message is written before the next frame of that connection is looked at.

Answers (HL7 v2.5 §2.9.2 original-mode acknowledgement; `caremesh.fhir.hl7v2.build_ack`):

- AA: the raw bytes, exactly as framed, were acknowledged by Kafka on ingest.hl7v2.v1;
- AR: never accepted as sent, do not resend unchanged: no MSH (`no-msh`), a message type other
  than ADT^A01/A02/A03/A04/A08 or ORU^R01 (`unsupported-message-type`), a message that can
  never become FHIR because it has no PID segment (`missing-segment`, ERR 100), a frame larger
  than `mllp.max_message_bytes` (`too-large`);
- AE: an MSH that cannot be read or has no MSH-10 (`malformed`, ERR-3 102), or Kafka did not
  acknowledge the write (`kafka-unavailable`, ERR-3 207: transient, the sender retries).

Each ACK's ERR segment follows the message's own HL7 version (MSH-12; see `build_ack`).
Refused messages are not written anywhere (DESIGN §4: not half-written); the sender holds them
and its operators see the ACK. The source is MSH-4 (its namespace id) when that is a configured
source id; otherwise `mllp.source`, and then the sending facility also scopes the message id, so
two unknown facilities that reuse a control id do not collide. Record key: MSH-10; `ce_id`:
`message_id(source, MSH-10)` (`message_id(source, "<MSH-4>|<MSH-10>")` for the default source).
Partition: chosen from the patient of PID-3 (`caremesh.connectors.ordering.hl7v2_ordering_key`, the
same murmur2 hash as the partitioner), not from the key, so one patient's messages stay in one
partition, in the order they were acknowledged (DESIGN §2 keeps the message id as the key).

`/metrics` (Prometheus text) and `/health` (200 while the listener accepts connections) are
served over HTTP on `mllp.metrics_host`:`mllp.metrics_port`, open like every service's: they carry
counters and a state only, no PHI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any, Final

from caremesh import topics
from caremesh.connectors import source_urn
from caremesh.connectors.mllp_framing import Frame, FrameEvent, MllpFramer, frame
from caremesh.connectors.ordering import hl7v2_ordering_key, ingest_partition
from caremesh.envelope import HL7V2, Envelope, message_id
from caremesh.errors import InvalidHl7Error, KafkaUnavailableError
from caremesh.fhir.hl7v2 import AckCode, Hl7Message, build_ack, component_of, parse_hl7
from caremesh.heap import freeze_startup_objects
from caremesh.kafka.io import AsyncProducer, Output
from caremesh.metrics import PROMETHEUS_CONTENT_TYPE, Metrics
from caremesh.settings import Settings

log = logging.getLogger(__name__)

COMPONENT: Final = "mllp"
READ_BYTES: Final = 64 * 1024
_AE_CODES: Final = frozenset({"malformed", "kafka-unavailable"})


def ack_code_for(code: str) -> AckCode:
    """AE for what may succeed later or is a content error, AR for what never will."""
    return "AE" if code in _AE_CODES else "AR"


class MllpServer:
    """An asyncio MLLP server writing accepted HL7 v2 messages to Kafka before acking them."""

    def __init__(
        self,
        settings: Settings,
        producer: AsyncProducer,
        metrics: Metrics,
        *,
        send_timeout: float = 30.0,
    ) -> None:
        self._cfg = settings.mllp
        self._topic = settings.kafka.topic_prefix + topics.INGEST_HL7V2
        self._sources = frozenset(s.id for s in settings.sources)
        self._producer = producer
        self._metrics = metrics
        self._send_timeout = send_timeout
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def listening(self) -> bool:
        """True while the listener accepts connections."""
        return self._server is not None and self._server.is_serving()

    @property
    def port(self) -> int:
        """The port listened on (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the MLLP server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._server = await asyncio.start_server(
            self._on_connection, self._cfg.host, self._cfg.port, limit=READ_BYTES
        )
        log.info("mllp listening on %s:%d", self._cfg.host, self.port)

    async def stop(self) -> None:
        """Stop accepting, close open connections and wait for their tasks."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def serve_forever(self) -> None:
        """Start (if needed) and serve until cancelled."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        framer = MllpFramer(self._cfg.max_message_bytes)
        frames = 0
        try:
            while True:
                try:
                    data = await asyncio.wait_for(
                        reader.read(READ_BYTES), self._cfg.idle_timeout_seconds
                    )
                except TimeoutError:
                    log.info(
                        "mllp connection idle for %.0fs, closed", self._cfg.idle_timeout_seconds
                    )
                    break
                if not data:
                    if framer.mid_frame:
                        log.info("mllp connection closed mid-frame; partial frame dropped")
                    break
                for event in framer.feed(data):
                    frames += 1
                    writer.write(frame(await self.handle(event)))
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            log.info("mllp connection lost after %d frames", frames)
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def handle(self, event: FrameEvent) -> bytes:
        """The ACK bytes for one frame, after its write was acknowledged when it is accepted."""
        started = time.perf_counter()
        self._metrics.messages_in.labels(COMPONENT).inc()
        try:
            if not isinstance(event, Frame):
                msh = event.head.replace(b"\n", b"\r").split(b"\r", 1)[0]
                return self._refuse(msh, "too-large", "too-large")
            try:
                summary = parse_hl7(event.payload)
            except InvalidHl7Error as exc:
                return self._refuse(event.payload, exc.code, exc.code)
            source, mid = self._identify(summary)
            key = summary.control_id.encode()
            ordering = hl7v2_ordering_key(source, event.payload, summary.seps)
            headers = Envelope(
                mid,
                source_urn(source),
                f"org.hl7.v2.{summary.message_type}_{summary.trigger_event}",
                content_type=HL7V2,
            ).headers()
            try:
                partitions = await asyncio.wait_for(
                    self._producer.partition_count(self._topic), self._send_timeout
                )
                partition = ingest_partition(ordering, key, partitions)
                record = Output(self._topic, key, event.payload, headers, partition)
                await asyncio.wait_for(self._producer.send_all([record]), self._send_timeout)
            except (KafkaUnavailableError, TimeoutError):
                return self._refuse(summary, "kafka-unavailable", "kafka-unavailable retry later")
            self._metrics.messages_out.labels(COMPONENT).inc()
            log.info(
                "mllp accepted: source=%s type=%s^%s ack=AA",
                source,
                summary.message_type,
                summary.trigger_event,
            )
            return build_ack(summary, "AA")
        finally:
            self._metrics.stage_duration.labels(COMPONENT).observe(time.perf_counter() - started)

    def _identify(self, summary: Hl7Message) -> tuple[str, str]:
        """(source id, message id) of an accepted message; see the module docstring."""
        facility = component_of(summary.sending_facility, summary.seps, 1)
        if facility in self._sources:
            return facility, message_id(facility, summary.control_id)
        default = self._cfg.source
        scoped = f"{facility}|{summary.control_id}" if facility else summary.control_id
        return default, message_id(default, scoped)

    def _refuse(self, message: bytes | Hl7Message, code: str, reason: str) -> bytes:
        ack = ack_code_for(code)
        self._metrics.rejected.labels(COMPONENT, code).inc()
        log.info("mllp refused: code=%s ack=%s", code, ack)
        return build_ack(message, ack, reason, error=code)


def create_status_app(mllp: MllpServer, metrics: Metrics) -> Any:
    """The listener's `/health` and `/metrics` as an ASGI app (open, PHI-free)."""
    from fastapi import FastAPI  # noqa: PLC0415 - only the served listener needs FastAPI
    from fastapi.responses import JSONResponse, Response  # noqa: PLC0415

    app = FastAPI(title="caremesh MLLP listener", version="1")

    @app.get("/health")
    async def health() -> Response:
        ok = mllp.listening
        return JSONResponse({"status": "ok" if ok else "not-listening"}, 200 if ok else 503)

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

    return app


async def _serve(settings: Settings) -> None:
    from caremesh.connectors.http.server import server as http_server  # noqa: PLC0415

    producer = AsyncProducer.from_settings(settings.kafka)
    metrics = Metrics()
    server = MllpServer(settings, producer, metrics)
    await server.start()
    status = http_server(
        create_status_app(server, metrics), settings.mllp.metrics_host, settings.mllp.metrics_port
    )
    status.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    status_task = asyncio.create_task(status.serve(), name="mllp-status-http")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        status.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(status_task, 10)
        await server.stop()
        await asyncio.to_thread(producer.close)


def run_mllp(settings: Settings) -> int:
    """Serve MLLP on `settings.mllp` host:port until SIGINT/SIGTERM; returns 0."""
    freeze_startup_objects()
    asyncio.run(_serve(settings))
    return 0
