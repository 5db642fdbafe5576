"""An asyncio face on the confluent-kafka producer: await the broker's acknowledgement.

Connectors answer their senders only after Kafka acknowledged the write (DESIGN §4), so each
`send` returns when the delivery report arrives, and raises `KafkaUnavailableError` when the
broker does not take the record within `message.timeout.ms`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from caremesh.envelope import HeaderList
from caremesh.errors import KafkaUnavailableError
from caremesh.kafka.config import KafkaTarget, producer_config
from caremesh.settings import KafkaSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Output:
    """One record to write: the one record type of every caremesh producer."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: HeaderList = field(default_factory=list)
    partition: int | None = None
    """An explicit partition; None lets the murmur2 partitioner choose from the key."""
    state: bool = False
    """A stage state (changelog) record: written only after the other outputs are acked."""


def produce_and_wait(
    producer: Producer, outputs: Sequence[Output], what: str, timeout: float = 30.0
) -> None:
    """Write `outputs` and wait for the broker's acknowledgement of every one; else raise
    `KafkaUnavailableError` naming `what` and the client's error code (never the content)."""
    failed: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed.append(err.name())

    for out in outputs:
        extra: dict[str, Any] = {} if out.partition is None else {"partition": out.partition}
        producer.produce(
            out.topic,
            key=out.key,
            value=out.value,
            headers=list(out.headers),
            on_delivery=delivered,
            **extra,
        )
    if producer.flush(timeout) or failed:
        raise KafkaUnavailableError(f"{what} not acknowledged ({(failed or ['timeout'])[0]})")


@dataclass(frozen=True, slots=True)
class Ack:
    """Where the broker stored a record."""

    topic: str
    partition: int
    offset: int


class AsyncProducer:
    """A shared idempotent producer whose sends are awaitable; one per process is enough."""

    def __init__(self, bootstrap_servers: KafkaTarget, **overrides: Any) -> None:
        config = producer_config(bootstrap_servers, **{"message.timeout.ms": 15000, **overrides})
        self._producer = Producer(config)
        self._partitions: dict[str, int] = {}
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._poller.start()

    @classmethod
    def from_settings(cls, kafka: KafkaSettings, **overrides: Any) -> AsyncProducer:
        """A producer connecting as this process's own principal (`CAREMESH_KAFKA__*`)."""
        return cls(kafka, **overrides)

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)

    async def send(self, record: Output) -> Ack:
        """Write one record and wait for the broker's acknowledgement."""
        return (await self.send_all([record]))[0]

    async def send_all(self, records: Sequence[Output]) -> list[Ack]:
        """Write records in order and wait until every one is acknowledged.

        Raises `KafkaUnavailableError` if any is not; records of one key keep their order.
        """
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Ack]] = []
        for rec in records:
            fut: asyncio.Future[Ack] = loop.create_future()
            futures.append(fut)

            def on_delivery(
                err: KafkaError | None, msg: Message, fut: asyncio.Future[Ack] = fut
            ) -> None:
                if err is not None:
                    exc = KafkaUnavailableError(f"write not acknowledged: {err.name()}")
                    loop.call_soon_threadsafe(_set_exception, fut, exc)
                else:
                    ack = Ack(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
                    loop.call_soon_threadsafe(_set_result, fut, ack)

            while True:
                try:
                    self._producer.produce(
                        rec.topic,
                        value=rec.value,
                        key=rec.key,
                        headers=rec.headers,
                        partition=-1 if rec.partition is None else rec.partition,
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    await asyncio.sleep(0.05)  # local queue full: let deliveries drain
                except Exception as exc:  # KafkaException: unknown topic, too large...
                    raise KafkaUnavailableError(f"write refused for topic {rec.topic}") from exc
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, Ack)]

    async def partition_count(self, topic: str, timeout: float = 10.0) -> int:
        """How many partitions `topic` has (asked once, then cached: catalogue topics never
        change their count); raises `KafkaUnavailableError` when the broker does not say."""
        known = self._partitions.get(topic)
        if known is not None:
            return known

        def ask() -> int:
            # A just-created topic may answer without partitions (or with a leader error but
            # its partitions listed, which is enough to count them): ask again until `timeout`.
            deadline = time.monotonic() + timeout
            while True:
                left = max(0.1, deadline - time.monotonic())
                meta = self._producer.list_topics(topic, timeout=left).topics.get(topic)
                if meta is not None and meta.partitions:
                    return len(meta.partitions)
                if time.monotonic() >= deadline:
                    raise KafkaUnavailableError(f"no partitions known for topic {topic}")
                time.sleep(0.1)

        try:
            count = await asyncio.to_thread(ask)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"no metadata for topic {topic}") from exc
        self._partitions[topic] = count
        return count

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still queued."""
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 30.0) -> None:
        """Flush and stop the poll thread."""
        left = self.flush(timeout)
        if left:
            log.warning("producer closed with %d records not acknowledged", left)
        self._closed.set()
        self._poller.join(timeout=5)


def _set_result(fut: asyncio.Future[Ack], ack: Ack) -> None:
    if not fut.done():
        fut.set_result(ack)


def _set_exception(fut: asyncio.Future[Ack], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
