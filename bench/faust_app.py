"""A Faust app configured as caremesh would run one: idempotent producers, at-least-once.

The product's stages run on the confluent-kafka batch runner (`caremesh.streams.batch`); this
app, in bench/ since Faust left the product (docs/decisions/0001-stream-runtime.md), is what
`bench/faust_passthrough.py` measures the framework's per-event path with, so the benchmark's
"Faust passthrough vs aiokafka loop" rows keep answering whether Faust could carry the stages.
Faust (faust-streaming) enables producer idempotence only in its experimental exactly-once
mode; `IdempotentTransport` enables `acks=all` + `enable_idempotence` on every producer
(DESIGN §4, §10). Needs the `bench` extra (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any

import faust
from faust.sensors import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from faust.types import TP, Message

from bench.faust_offsets import CommitSafeConsumer
from caremesh.heap import freeze_startup_objects
from caremesh.kafka.config import aiokafka_security
from caremesh.metrics import PROMETHEUS_CONTENT_TYPE, Metrics
from caremesh.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)


def faust_credentials(kafka: KafkaSettings) -> Any:
    """Faust's `broker_credentials`: SASL credentials, TLS credentials, or None for PLAINTEXT
    (the same options as the product's aiokafka clients)."""
    options = aiokafka_security(kafka)
    if not options:
        return None
    context = options.get("ssl_context")
    if options["security_protocol"] == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        ssl_context=context,
        mechanism=options["sasl_mechanism"],
    )


class LeanProducerBuffer(ProducerBuffer):
    """Faust's producer buffer, whose size (read before every record is handed to a stream)
    does not look the `producer_threaded` setting up each time."""

    _threaded: bool | None = None

    @property
    def size(self) -> int:
        """Messages waiting to be produced."""
        threaded = self._threaded
        if threaded is None:
            app = self.app
            assert app is not None  # set by the producer right after construction
            threaded = self._threaded = bool(app.conf.producer_threaded)
        if threaded:
            return int(super().size)
        return int(self.pending.qsize())


class IdempotentProducer(faust_aiokafka.Producer):
    """aiokafka producer with idempotence and acks=all outside transactions too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lean = LeanProducerBuffer(loop=self.loop, beacon=self.beacon)
        lean.threaded_producer = getattr(self.buffer, "threaded_producer", None)
        lean.app = self.app
        self.buffer = lean

    def _settings_extra(self) -> dict[str, Any]:
        return {"acks": "all", "enable_idempotence": True}


class IdempotentTransport(faust_aiokafka.Transport):
    """The aiokafka transport with `IdempotentProducer` and `CommitSafeConsumer`."""

    Producer = IdempotentProducer
    Consumer = CommitSafeConsumer


class LeanMonitor(Monitor):
    """Faust's main sensor, keeping per event only what Faust itself reads back.

    caremesh's metrics are its own (`caremesh.metrics`); Faust's `Monitor` keeps statistics
    for Faust's web views on every record in, event in and out, record out and send (without
    it, an agent that only consumes went from 9,751 to 13,516 events/s). What Faust's consumer
    reads from the monitor (each partition's last stream event time, for its slow-processing
    warnings; the committed offsets) is still kept."""

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        """Nothing per received record."""

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> None:
        """Note when the partition's stream last took an event (Faust's stall warnings)."""
        self.stream_inbound_time[tp] = monotonic()

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        """Nothing per processed event."""

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        """Nothing per acknowledged record."""

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> None:
        """Nothing per sent record."""

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        """Nothing per sent record."""


class CaremeshApp(faust.App):
    """A Faust app whose transports produce idempotently, a little cheaper per event."""

    caremesh_metrics: Metrics
    _event_type: Any = None

    def _new_transport(self) -> Any:
        return IdempotentTransport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Any:
        return IdempotentTransport(self.conf.broker_producer, self)

    def create_event(self, key: Any, value: Any, headers: Any, message: Message) -> Any:
        """Faust's event for a record, its class looked up in the settings once, not per event
        (Faust's settings object resolves each attribute read through its registry)."""
        event_type = self._event_type
        if event_type is None:
            event_type = self._event_type = self.conf.Event
        return event_type(self, key, value, headers, message)

    async def on_started(self) -> None:
        """Leave what starting built (modules, classes, services) out of every later garbage
        collection: a full collection otherwise walks all of it again, while each event makes
        short-lived containers (event, message, headers, futures) that trigger collections."""
        await super().on_started()
        freeze_startup_objects()


def create_app(settings: Settings, metrics: Metrics) -> CaremeshApp:
    """Build the app from settings; stages register their agents on it."""
    brokers = ";".join(
        f"kafka://{hp.strip()}" for hp in settings.kafka.bootstrap_servers.split(",")
    )
    app = CaremeshApp(
        settings.worker.app_id,
        broker=brokers,
        store="memory://",
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        topic_allow_declare=True,
        producer_acks=-1,
        producer_max_request_size=16 * 1024 * 1024,
        # batch the agents' sends: one produce request per partition per 5 ms instead of one per
        # record (Faust's default is 0); measured +18 % on the passthrough benchmark
        producer_linger=0.005,
        consumer_max_fetch_size=4 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_wait_empty=False,  # at-least-once: what was not committed is processed again
        web_enabled=True,
        web_bind=settings.worker.web_host,
        web_port=settings.worker.web_port,
        web_host=settings.worker.web_host,
        datadir=str(settings.worker.data_dir),
        table_standby_replicas=0,
        autodiscover=False,
        Monitor=LeanMonitor,
        broker_credentials=faust_credentials(settings.kafka),
        # Failover after a crash takes one session timeout (settings.worker, default 10 s).
        broker_session_timeout=settings.worker.session_timeout_seconds,
        broker_heartbeat_interval=settings.worker.session_timeout_seconds / 3,
    )
    app.caremesh_metrics = metrics

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(metrics.render(), content_type=PROMETHEUS_CONTENT_TYPE)

    return app
