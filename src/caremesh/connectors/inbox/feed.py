"""The inbox's Kafka reader: folds pathway.alerts.v1, pathway.actions.v1 and the patients'
Patient and CareTeam resources of clinical.fhir.v1 (`patients`) from the beginning.

Like `caremesh.tables.consent_ledger`, every inbox process reads both topics with its own group-less
aiokafka consumer, every partition from offset 0, so closed alerts stay closed across restarts
and every replica shows the same inbox. `ready` turns true once the fold has passed the end
offsets seen at start-up. Changes are pushed to subscribers (the event streams) through bounded
queues; a subscriber that falls behind is marked `overflowed` and its stream ends, so the page
reconnects and reloads the list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Final

import orjson

from caremesh.connectors.inbox.patients import PatientTable
from caremesh.connectors.inbox.state import InboxAlert, InboxState, read_alert
from caremesh.envelope import H_TYPE, fhir_event_type
from caremesh.errors import RejectedInputError
from caremesh.kafka.client import AIOKafkaConsumer
from caremesh.kafka.client import AioTopicPartition as TopicPartition
from caremesh.kafka.config import KafkaTarget
from caremesh.kafka.reading import open_from_beginning
from caremesh.metrics import Metrics
from caremesh.pathways.alert import CoordinatorAction, parse_action

log = logging.getLogger(__name__)

COMPONENT: Final = "inbox"
QUEUE_SIZE: Final = 512
PATIENT_CONTEXT_TYPES: Final = frozenset(
    fhir_event_type(t).encode() for t in ("Patient", "CareTeam")
)


class Subscription:
    """One event stream's queue of changed alerts."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[InboxAlert] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = False

    def offer(self, alert: InboxAlert) -> None:
        """Queue a change without waiting; a full queue marks the subscription overflowed."""
        try:
            self.queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.overflowed = True


class AlertFeed:
    """Reads both topics into an InboxState and tells subscribers what changed."""

    def __init__(
        self,
        bootstrap_servers: KafkaTarget,
        alerts_topic: str,
        actions_topic: str,
        metrics: Metrics,
        *,
        state: InboxState | None = None,
        clinical_topic: str | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.alerts_topic = alerts_topic
        self.actions_topic = actions_topic
        self.clinical_topic = clinical_topic
        self.metrics = metrics
        self.state = state or InboxState()
        self.patients = PatientTable()
        self._subscribers: set[Subscription] = set()
        self._ends: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Assign every partition of both topics from the beginning and start folding."""
        names = [self.alerts_topic, self.actions_topic]
        if self.clinical_topic is not None:
            names.append(self.clinical_topic)
        consumer, tps = await open_from_beginning(self.bootstrap_servers, names)
        self._ends = dict(await consumer.end_offsets(tps))
        self._positions = dict.fromkeys(tps, 0)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="inbox-feed")
        log.info("inbox feed started on %d partitions", len(tps))

    async def stop(self) -> None:
        """Stop folding and close the consumer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    @property
    def ready(self) -> bool:
        """True once everything on the topics at start-up has been folded."""
        running = self._task is not None and not self._task.done()
        return running and all(self._positions.get(tp, 0) >= end for tp, end in self._ends.items())

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, records in batches.items():
                for record in records:
                    if tp.topic == self.alerts_topic:
                        self._fold_alert(record.key, record.value)
                    elif tp.topic == self.clinical_topic:
                        self._fold_clinical(record.key, record.value, record.headers)
                    else:
                        self._fold_action(record.value)
            self._positions = {tp: await consumer.position(tp) for tp in self._positions}

    def _reject(self, code: str, topic: str) -> None:
        self.metrics.rejected.labels(COMPONENT, code).inc()
        log.warning("inbox skipped a record of %s: %s", topic, code)

    def _fold_alert(self, key: bytes | None, value: bytes | None) -> None:
        self.metrics.messages_in.labels(COMPONENT).inc()
        try:
            data = orjson.loads(value or b"")
            alert = read_alert(key.decode("utf-8", "replace") if key else None, data)
        except orjson.JSONDecodeError:
            self._reject("invalid-json", self.alerts_topic)
            return
        except RejectedInputError as exc:
            self._reject(exc.code, self.alerts_topic)
            return
        added = self.state.add_alert(alert)
        if added is not None:
            self.publish(added)

    def _fold_clinical(
        self, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        """A Patient or CareTeam into the patient table (other types are not even parsed)."""
        kind = next((v for k, v in headers if k == H_TYPE), None)
        if kind is not None and kind not in PATIENT_CONTEXT_TYPES:
            return
        if not key or not value:
            return
        try:
            resource = orjson.loads(value)
        except orjson.JSONDecodeError:
            self._reject("invalid-json", self.clinical_topic or "")
            return
        if isinstance(resource, dict):
            self.patients.fold(key.decode("utf-8", "replace"), resource)

    def _fold_action(self, value: bytes | None) -> None:
        self.metrics.messages_in.labels(COMPONENT).inc()
        try:
            action = parse_action(value or b"")
        except RejectedInputError as exc:
            self._reject(exc.code, self.actions_topic)
            return
        self.apply(action)

    def apply(self, action: CoordinatorAction) -> InboxAlert | None:
        """Fold an action (read from Kafka, or just written by this process); publish a change."""
        changed = self.state.apply_action(action)
        if changed is not None:
            self.publish(changed)
        return changed

    def publish(self, alert: InboxAlert) -> None:
        """Tell every subscriber that an alert is new or changed."""
        for sub in self._subscribers:
            sub.offer(alert)

    def subscribe(self) -> Subscription:
        """A new subscription; call `unsubscribe` when the stream ends."""
        sub = Subscription()
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscription."""
        self._subscribers.discard(sub)
