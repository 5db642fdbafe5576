"""FHIR REST delivery: each organisation's outbox.<org>.v1 pushed to its FHIR endpoint, isolated.

Contract (DESIGN §4, §8):

- One asyncio task per configured organisation with a `fhir_endpoint`, each with its own
  consumer (group `<prefix>delivery-<org>`) and its own HTTP connection pool, so an endpoint that
  is down or slow stalls only its own organisation. A task that crashes is restarted.
- Mode `rest` (the default): a record with `resourceType` and a FHIR `id` is sent as
  `PUT {base}/{type}/{id}` (an idempotent update; the share stage gave it its recipient id,
  `caremesh.fhir.recipient_ids`), one without an id as `POST {base}/{type}`, with
  `Authorization: Bearer` (the organisation's token), `Content-Type: application/fhir+json` and
  `X-Caremesh-Event-Id: <ce_id>`. Within a fetched batch of a partition the Patients go first,
  so a server that enforces referential integrity has the Patient before what references it.
- Mode `transaction`: the records of one patient within a fetched batch become one FHIR
  transaction Bundle (`POST {base}`, see `transaction_bundle`): each entry a conditional update
  by identifier (`Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|<INS>` for a Patient with an
  INS, `<type>?identifier=urn:caremesh:source:<source>|<local id>` for the others), so the
  receiver's own record is matched, not duplicated; references to the Bundle's Patient point to
  its entry, other references to a patient by INS are conditional. All its records share the
  transaction's outcome; each still gets its AuditEvent, and its failed-topic record.
- Each record is sent in the organisation's `fhir_release` (R4 default, R4B, R5), converted from
  the release of its `caremesh-fhir-release` header by `caremesh.fhir.releases`; a record with
  no faithful conversion is not sent and goes to delivery.failed.v1 at once with the code
  `unconvertible-<reason>` and the element named in the reason (never a value).
- 2xx is delivered. 5xx, 408, 429, timeouts and connection errors are retried with exponential
  backoff and jitter (`delivery.backoff_base_seconds` doubling up to `backoff_max_seconds`);
  any other status is a permanent failure. After `delivery.max_attempts` tries, or at once for a
  permanent failure or a record that is not a FHIR resource, the record goes to
  delivery.failed.v1 (original key, value and headers, plus value-free reason headers: an error
  code such as `http-400`, the attempts, the organisation and the origin coordinates; never a
  response body).
- Order per patient: the records of one partition are delivered one after the other;
  partitions of one organisation proceed side by side.
- Offsets are committed record by record, only after the outcome is settled: delivered (and its
  AuditEvent acknowledged on audit.v1) or failed (the failed-topic record and the AuditEvent
  acknowledged).
- Deduplication by `ce_id`: each organisation keeps the ce_ids it delivered in a bounded LRU
  (`delivery.dedup_cache_size`), so a record seen again (a replay, a redelivery after a
  rebalance) is not sent twice while the process lives. Across restarts the window between a
  delivery and its commit can resend a record once: a PUT is idempotent at the endpoint, and a
  POST carries `X-Caremesh-Event-Id` for the endpoint to drop it.
- `/metrics` (`caremesh_deliveries_total{organisation,outcome}`) and `/health` are served on
  `delivery.host:port` without authentication: counters and task states only, no PHI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote

import httpx
import orjson
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from caremesh import envelope, topics
from caremesh.audit.events import delivery_audit_event
from caremesh.connectors.http.server import server
from caremesh.consent.model import ActorRef
from caremesh.envelope import Envelope, MessageId, PatientKey, fhir_event_type
from caremesh.errors import ConfigurationError, KafkaUnavailableError
from caremesh.fhir.patient_key import INS_SYSTEM, find_ins
from caremesh.fhir.recipient_ids import SOURCE_SYSTEM_PREFIX
from caremesh.fhir.releases import Unconvertible, recipient_value
from caremesh.heap import freeze_startup_objects
from caremesh.kafka.client import AIOKafkaConsumer, ConsumerRecord
from caremesh.kafka.client import AioKafkaError as KafkaError
from caremesh.kafka.client import AioTopicPartition as TopicPartition
from caremesh.kafka.config import aiokafka_config
from caremesh.kafka.io import AsyncProducer, Output
from caremesh.metrics import PROMETHEUS_CONTENT_TYPE, Metrics
from caremesh.settings import DeliverySettings, OrganisationSettings, Settings
from caremesh.tables.organisations import OrganisationRegistry, follow

log = logging.getLogger(__name__)

COMPONENT: Final = "fhir_delivery"
OBSERVER: Final = "caremesh-fhir-delivery"
PURPOSE: Final = "TREAT"
EVENT_ID_HEADER: Final = "X-Caremesh-Event-Id"
H_ATTEMPTS: Final = "caremesh-delivery-attempts"
H_ORGANISATION: Final = "caremesh-delivery-organisation"
_TYPE: Final = re.compile(r"[A-Z][A-Za-z]{1,63}")
_FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_jitter = random.SystemRandom()


# -- pure rules ------------------------------------------------------------------------------


def delivery_request(base_url: str, resource: object) -> tuple[str, str, str | None] | None:
    """(method, URL, `Type/id` or None) for a resource, or None when it is not a FHIR resource."""
    if not isinstance(resource, Mapping):
        return None
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not _TYPE.fullmatch(rtype):
        return None
    base = base_url.rstrip("/")
    rid = resource.get("id")
    if isinstance(rid, str) and _FHIR_ID.fullmatch(rid):
        return "PUT", f"{base}/{rtype}/{quote(rid, safe='')}", f"{rtype}/{rid}"
    return "POST", f"{base}/{rtype}", None


def rest_order(resource_types: list[str]) -> list[int]:
    """The order to deliver a batch in: its Patients first, each group in its own order."""
    patients = [i for i, t in enumerate(resource_types) if t == "Patient"]
    return patients + [i for i, t in enumerate(resource_types) if t != "Patient"]


def _conditional_url(resource: Mapping[str, object]) -> str | None:
    """`<type>?identifier=<system>|<value>` for a resource's matching identifier, or None."""
    rtype = str(resource.get("resourceType"))
    identifiers = resource.get("identifier")
    if rtype == "Patient":
        ins = find_ins(identifiers)
        if ins is not None:
            return f"Patient?identifier={quote(INS_SYSTEM, safe=':')}|{quote(ins, safe='')}"
    for item in identifiers if isinstance(identifiers, list) else []:
        system = item.get("system") if isinstance(item, Mapping) else None
        value = item.get("value") if isinstance(item, Mapping) else None
        if (
            isinstance(system, str)
            and system.startswith(SOURCE_SYSTEM_PREFIX)
            and isinstance(value, str)
        ):
            return f"{rtype}?identifier={quote(system, safe=':')}|{quote(value, safe='')}"
    return None


def _entry_url(rtype: str, rid: object) -> str:
    return f"urn:uuid:{envelope.child_message_id('recipient-entry', f'{rtype}/{rid}')}"


def _reference_condition(reference: Mapping[str, object], rtype: str) -> str | None:
    """A conditional reference by the Reference's identifier: the INS, or the source's id."""
    identifier = reference.get("identifier")
    if not isinstance(identifier, Mapping):
        return None
    system, value = identifier.get("system"), identifier.get("value")
    if not isinstance(system, str) or not isinstance(value, str):
        return None
    if (rtype == "Patient" and system == INS_SYSTEM) or system.startswith(SOURCE_SYSTEM_PREFIX):
        return f"{rtype}?identifier={system}|{value}"
    return None


def _bundle_refs(value: object, local: Mapping[str, str], depth: int = 0) -> object:
    """References to an entry of the Bundle → its fullUrl; others → conditional by identifier."""
    if depth > 64:
        return value
    if isinstance(value, list):
        return [_bundle_refs(v, local, depth + 1) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _bundle_refs(v, local, depth + 1) for k, v in value.items()}
    target = out.get("reference")
    if isinstance(target, str) and _TYPE.fullmatch(rtype := target.partition("/")[0]):
        if target in local:
            out["reference"] = local[target]
        elif (condition := _reference_condition(out, rtype)) is not None:
            out["reference"] = condition
    return out


def transaction_bundle(resources: list[Mapping[str, object]]) -> dict[str, object]:
    """A FHIR R4 transaction Bundle (http://hl7.org/fhir/R4/http.html#transaction) of resources.

    Each entry has a `urn:uuid:` fullUrl derived from its `Type/id` and, when it has a matching
    identifier, a conditional update without its id (`_conditional_url`; the receiver's record,
    if it has one, keeps its own id), else a `PUT Type/id`, else a `POST Type`. The Patients come
    first; references between entries point to the entries' fullUrls, and references out of the
    Bundle are conditional on the Reference's identifier where it has one (the INS for a Patient,
    the source's id otherwise), so they resolve to the receiver's own records.
    """
    order = rest_order([str(r.get("resourceType")) for r in resources])
    local = {
        f"{r.get('resourceType')}/{r.get('id')}": _entry_url(
            str(r.get("resourceType")), r.get("id")
        )
        for r in resources
        if isinstance(r.get("id"), str)
    }
    entries: list[dict[str, object]] = []
    for index in order:
        resource = resources[index]
        rtype = str(resource.get("resourceType"))
        rid = resource.get("id")
        body = _bundle_refs(resource, local)
        if not isinstance(body, dict):
            continue
        conditional = _conditional_url(resource)
        if conditional is not None:
            request = {"method": "PUT", "url": conditional}
            body.pop("id", None)
        elif isinstance(rid, str) and _FHIR_ID.fullmatch(rid):
            request = {"method": "PUT", "url": f"{rtype}/{rid}"}
        else:
            request = {"method": "POST", "url": rtype}
        entry: dict[str, object] = {"resource": body, "request": request}
        if isinstance(rid, str):
            entry["fullUrl"] = _entry_url(rtype, rid)
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def retryable_status(status: int) -> bool:
    """True for statuses worth retrying: 5xx, 408 Request Timeout, 429 Too Many Requests."""
    return status >= 500 or status in (408, 429)


def backoff_delay(
    attempt: int, base: float, cap: float, draw: Callable[[], float] = _jitter.random
) -> float:
    """The pause after failed try `attempt` (1-based): half of min(cap, base·2^(n-1)) plus jitter.

    `draw` returns a float in [0, 1); the delay lies in [d/2, d) so retries never hammer.
    """
    ceiling = min(cap, base * float(2 ** min(attempt - 1, 30)))
    return float(ceiling / 2 + draw() * ceiling / 2)


class DedupCache:
    """A bounded LRU set of delivered ce_ids (size 0 disables it)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, ce_id: object) -> bool:
        if ce_id in self._ids:
            self._ids.move_to_end(str(ce_id))
            return True
        return False

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ce_id: str) -> None:
        """Remember one id, forgetting the least recently seen beyond `size`."""
        if self.size <= 0:
            return
        self._ids[ce_id] = None
        self._ids.move_to_end(ce_id)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)


class _Offsets:
    """The offset to commit as records of a batch settle out of order: the first unsettled."""

    def __init__(self, offsets: list[int]) -> None:
        self._pending = sorted(offsets)
        self._settled: set[int] = set()
        self._committed = -1

    def done(self, offsets: list[int]) -> int | None:
        """Mark offsets settled; the new commit position, or None when it did not move."""
        self._settled.update(offsets)
        position = self._committed
        while self._pending and self._pending[0] in self._settled:
            position = self._pending.pop(0) + 1
        if position == self._committed:
            return None
        self._committed = position
        return position


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one record's delivery ended: `code` None when delivered."""

    code: str | None
    attempts: int
    resource: str | None = None
    reason: str | None = None


# -- one organisation -----------------------------------------------------------------------


class OrganisationDelivery:
    """Delivers one organisation's outbox to its endpoint."""

    def __init__(
        self,
        org: OrganisationSettings,
        settings: Settings,
        producer: AsyncProducer,
        metrics: Metrics,
    ) -> None:
        if org.fhir_endpoint is None:
            raise ConfigurationError(f"organisation {org.id} has no fhir_endpoint")
        prefix = settings.kafka.topic_prefix
        self.org = org
        self.endpoint = org.fhir_endpoint
        self.cfg: DeliverySettings = settings.delivery
        self.kafka = settings.kafka
        self.topic = prefix + topics.outbox_topic(org.id)
        self.group = f"{prefix}delivery-{org.id}"
        self.failed_topic = prefix + topics.DELIVERY_FAILED
        self.audit_topic = prefix + topics.AUDIT
        self.producer = producer
        self.metrics = metrics
        self.delivered = DedupCache(self.cfg.dedup_cache_size)
        self.recipient = ActorRef(reference=f"Organization/{org.id}")
        self._commit_lock = asyncio.Lock()
        self._headers = {"Content-Type": envelope.FHIR_JSON, "Accept": envelope.FHIR_JSON}
        if org.token is not None:
            self._headers["Authorization"] = f"Bearer {org.token.get_secret_value()}"

    async def run(self) -> None:
        """Consume and deliver until cancelled."""
        attempt_budget = self.cfg.max_attempts * (
            self.cfg.timeout_seconds + self.cfg.backoff_max_seconds
        )
        consumer = AIOKafkaConsumer(
            self.topic,
            **aiokafka_config(self.kafka),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=50,
            # a partition's batch may wait out every retry of each record
            max_poll_interval_ms=int(max(300.0, 50 * attempt_budget) * 1000),
        )
        await consumer.start()
        log.info("delivery started: organisation=%s", self.org.id)
        try:
            async with httpx.AsyncClient(timeout=self.cfg.timeout_seconds) as client:
                while True:
                    batches = await consumer.getmany(timeout_ms=500)
                    await asyncio.gather(
                        *(
                            self._partition(consumer, client, tp, records)
                            for tp, records in batches.items()
                        )
                    )
        finally:
            await consumer.stop()

    async def _partition(
        self,
        consumer: AIOKafkaConsumer,
        client: httpx.AsyncClient,
        tp: TopicPartition,
        records: list[ConsumerRecord[bytes, bytes]],
    ) -> None:
        offsets = _Offsets([r.offset for r in records])
        if self.org.delivery_mode == "transaction":
            groups: dict[bytes | None, list[ConsumerRecord[bytes, bytes]]] = {}
            for record in records:
                groups.setdefault(record.key, []).append(record)
            work = list(groups.values())
        else:
            types = [envelope.header_value(r.headers, envelope.H_TYPE) or "" for r in records]
            work = [[records[i]] for i in rest_order([t.rpartition(".")[2] for t in types])]
        for group in work:
            if len(group) == 1 and self.org.delivery_mode != "transaction":
                await self._one(client, group[0])
            else:
                await self._transaction(client, group)
            ready = offsets.done([r.offset for r in group])
            if ready is None:
                continue
            async with self._commit_lock:
                try:
                    await consumer.commit({tp: ready})
                except KafkaError as exc:  # revoked in a rebalance: the new owner redelivers
                    log.warning(
                        "delivery commit failed: organisation=%s partition=%d (%s)",
                        self.org.id,
                        tp.partition,
                        type(exc).__name__,
                    )
                    return

    def _duplicate(self, ce_id: str) -> bool:
        if ce_id and ce_id in self.delivered:
            self.metrics.deliveries.labels(self.org.id, "duplicate").inc()
            return True
        return False

    async def _one(self, client: httpx.AsyncClient, record: ConsumerRecord[bytes, bytes]) -> None:
        started = time.perf_counter()
        self.metrics.messages_in.labels(COMPONENT).inc()
        ce_id = envelope.header_value(record.headers, envelope.H_ID) or ""
        if self._duplicate(ce_id):
            return
        value, refused = self._in_release(record.value, list(record.headers or ()))
        result = refused or await self._deliver(client, value, ce_id)
        await self._settle([record], result, started)

    async def _transaction(
        self, client: httpx.AsyncClient, records: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        """One patient's records of a batch as one transaction Bundle (mode `transaction`)."""
        started = time.perf_counter()
        self.metrics.messages_in.labels(COMPONENT).inc(len(records))
        pending: list[ConsumerRecord[bytes, bytes]] = []
        resources: list[Mapping[str, object]] = []
        for record in records:
            ce_id = envelope.header_value(record.headers, envelope.H_ID) or ""
            if self._duplicate(ce_id):
                continue
            value, refused = self._in_release(record.value, list(record.headers or ()))
            if refused is not None:
                await self._settle([record], refused, started)
                continue
            try:
                resource = orjson.loads(value) if value is not None else None
            except orjson.JSONDecodeError:
                resource = None
            if delivery_request(self.endpoint, resource) is None or not isinstance(resource, dict):
                await self._settle([record], Attempt("invalid-record", 0), started)
                continue
            pending.append(record)
            resources.append(resource)
        if not pending:
            return
        body = orjson.dumps(transaction_bundle(resources))
        ce_id = envelope.child_message_id(
            "transaction",
            ",".join(envelope.header_value(r.headers, envelope.H_ID) or "" for r in pending),
        )
        base = self.endpoint.rstrip("/")
        result = await self._send(client, "POST", base, body, ce_id, what=None)
        for record, resource in zip(pending, resources, strict=True):
            what = f"{resource.get('resourceType')}/{resource.get('id')}"
            await self._settle([record], Attempt(result.code, result.attempts, what), started)

    async def _settle(
        self, records: list[ConsumerRecord[bytes, bytes]], result: Attempt, started: float
    ) -> None:
        """Write each record's outcome (AuditEvent, and the failed-topic record) until acked."""
        outcome = "delivered" if result.code is None else "failed"
        for record in records:
            headers = list(record.headers or ())
            ce_id = envelope.header_value(headers, envelope.H_ID) or ""
            out = [self._audit(record, headers, ce_id, result)]
            if result.code is not None:
                out.append(self._failed(record, headers, result))
            await self._write(out)
            if result.code is None and ce_id:
                self.delivered.add(ce_id)
            self.metrics.deliveries.labels(self.org.id, outcome).inc()
            self.metrics.stage_duration.labels(COMPONENT).observe(time.perf_counter() - started)
            log.info(
                "delivery %s: organisation=%s code=%s attempts=%d partition=%d offset=%d",
                outcome,
                self.org.id,
                result.code or "-",
                result.attempts,
                record.partition,
                record.offset,
            )

    def _in_release(
        self, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> tuple[bytes | None, Attempt | None]:
        """The value in the organisation's FHIR release, or the failure when none is faithful."""
        source = envelope.header_value(headers, envelope.H_FHIR_RELEASE)
        out = recipient_value(value, source, self.org.fhir_release)
        if not isinstance(out, Unconvertible):
            return out, None
        origin = source or "R4"
        reason = f"no faithful {origin}-to-{self.org.fhir_release} conversion of {out.element}"
        return value, Attempt(f"unconvertible-{out.reason_code}", 0, reason=reason)

    async def _deliver(self, client: httpx.AsyncClient, value: bytes | None, ce_id: str) -> Attempt:
        try:
            resource = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            resource = None
        request = delivery_request(self.endpoint, resource)
        if request is None or value is None:
            return Attempt("invalid-record", 0)
        method, url, what = request
        return await self._send(client, method, url, value, ce_id, what=what)

    async def _send(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        value: bytes,
        ce_id: str,
        *,
        what: str | None,
    ) -> Attempt:
        """One request, retried with backoff until settled (2xx, permanent, or out of tries)."""
        headers = {**self._headers, EVENT_ID_HEADER: ce_id} if ce_id else self._headers
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await client.request(method, url, content=value, headers=headers)
            except httpx.TimeoutException:
                code = "timeout"
            except httpx.TransportError:
                code = "connection-error"
            else:
                if 200 <= response.status_code < 300:
                    return Attempt(None, attempt, what)
                code = f"http-{response.status_code}"
                if not retryable_status(response.status_code):
                    return Attempt(code, attempt, what)
            if attempt >= self.cfg.max_attempts:
                return Attempt(code, attempt, what)
            delay = backoff_delay(
                attempt, self.cfg.backoff_base_seconds, self.cfg.backoff_max_seconds
            )
            self.metrics.retries.labels(COMPONENT).inc()
            log.warning(
                "delivery retry: organisation=%s code=%s attempt=%d next in %.2fs",
                self.org.id,
                code,
                attempt,
                delay,
            )
            await asyncio.sleep(delay)

    def _audit(
        self,
        record: ConsumerRecord[bytes, bytes],
        headers: list[tuple[str, bytes]],
        ce_id: str,
        result: Attempt,
    ) -> Output:
        outcome = "delivered" if result.code is None else "failed"
        audit_id = (
            envelope.child_message_id(ce_id, f"delivery:{self.org.id}:{outcome}")
            if ce_id
            else MessageId(str(uuid.uuid4()))
        )
        decisions = envelope.header_value(headers, envelope.H_CONSENT_DECISIONS) or ""
        event = delivery_audit_event(
            patient=PatientKey((record.key or b"").decode("utf-8", "replace")),
            recipient=self.recipient,
            purpose=PURPOSE,
            message_id=MessageId(ce_id),
            resource=result.resource,
            consent_ids=[c for c in decisions.split(",") if c],
            error_code=result.code,
            event_id=audit_id,
            recorded=datetime.now(UTC),
            observer=OBSERVER,
        )
        env = Envelope(audit_id, f"urn:caremesh:{COMPONENT}", fhir_event_type("AuditEvent"))
        return Output(self.audit_topic, audit_id.encode(), orjson.dumps(event), env.headers())

    def _failed(
        self,
        record: ConsumerRecord[bytes, bytes],
        headers: list[tuple[str, bytes]],
        result: Attempt,
    ) -> Output:
        code = result.code or "unknown"
        reason = result.reason or f"{code} after {result.attempts} attempt(s)"
        extra: list[tuple[str, str | bytes | None]] = [
            (envelope.H_ERROR_CODE, code.encode()),
            (envelope.H_ERROR_STAGE, COMPONENT.encode()),
            (envelope.H_ERROR_REASON, reason.encode()),
            (envelope.H_ORIGIN_TOPIC, record.topic.encode()),
            (envelope.H_ORIGIN_PARTITION, str(record.partition).encode()),
            (envelope.H_ORIGIN_OFFSET, str(record.offset).encode()),
            (H_ORGANISATION, self.org.id.encode()),
            (H_ATTEMPTS, str(result.attempts).encode()),
        ]
        kept: list[tuple[str, str | bytes | None]] = [
            (k, v) for k, v in headers if k not in {name for name, _ in extra}
        ]
        return Output(self.failed_topic, record.key, record.value, kept + extra)

    async def _write(self, records: list[Output]) -> None:
        """Write until acknowledged: an outcome is never dropped, the record never re-sent."""
        pause = 0.2
        while True:
            try:
                await self.producer.send_all(records)
                return
            except KafkaUnavailableError:
                self.metrics.retries.labels(COMPONENT).inc()
                log.warning("delivery outcome not acknowledged: organisation=%s", self.org.id)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)


# -- every organisation, and the process ----------------------------------------------------


class FhirDelivery:
    """One supervised delivery task per organisation with an endpoint, following the registry.

    The organisations are the configured ones and those of the registry topic organisations.v1
    (`caremesh.tables.organisations`): a task starts when an organisation with an endpoint is
    admitted, restarts when its endpoint or token changes, and stops when it is removed.
    """

    def __init__(
        self,
        settings: Settings,
        producer: AsyncProducer,
        metrics: Metrics,
        *,
        follow_registry: bool = True,
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.metrics = metrics
        self.follow_registry = follow_registry
        self.registry = OrganisationRegistry(settings.organisations)
        if not follow_registry and not self._wanted():
            raise ConfigurationError("no organisation has a fhir_endpoint to deliver to")
        self.state: dict[str, str] = dict.fromkeys(self._wanted(), "starting")
        self._tasks: dict[str, tuple[OrganisationSettings, asyncio.Task[None]]] = {}
        self._workers: dict[str, OrganisationDelivery] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def _wanted(self) -> dict[str, OrganisationSettings]:
        return {
            o.id: o for o in self.registry.organisations.values() if o.fhir_endpoint is not None
        }

    async def run(self) -> None:
        """Run every organisation's task, and follow the registry, until cancelled."""
        follower: asyncio.Task[None] | None = None
        try:
            self.reconcile()
            if self.follow_registry:
                topic = self.settings.kafka.topic_prefix + topics.ORGANISATIONS
                follower = asyncio.create_task(
                    follow(
                        self.registry, self.settings.kafka, topic, lambda _org: self.reconcile()
                    ),
                    name="delivery-registry",
                )
            await asyncio.Event().wait()
        finally:
            if follower is not None:
                follower.cancel()
            for org in list(self._tasks):
                await self._stop(org)

    def reconcile(self) -> None:
        """Start, restart or stop tasks so that they match the organisations of the moment."""
        wanted = self._wanted()
        for org, (current, task) in list(self._tasks.items()):
            if wanted.get(org) != current:
                task.cancel()
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)
                del self._tasks[org]
                self._workers.pop(org, None)
                self.state.pop(org, None)
                log.info("delivery stopped: organisation=%s", org)
        for org, settings in wanted.items():
            if org in self._tasks:
                continue
            worker = OrganisationDelivery(settings, self.settings, self.producer, self.metrics)
            self._workers[org] = worker
            self.state[org] = "starting"
            task = asyncio.create_task(self._supervise(worker), name=f"delivery-{org}")
            self._tasks[org] = (settings, task)

    async def _stop(self, org: str) -> None:
        _settings, task = self._tasks.pop(org)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _supervise(self, worker: OrganisationDelivery) -> None:
        pause = 1.0
        while True:
            if self._workers.get(worker.org.id) is worker:
                self.state[worker.org.id] = "running"
            try:
                await worker.run()
            except asyncio.CancelledError:
                if self._workers.get(worker.org.id) is worker:
                    self.state[worker.org.id] = "stopped"
                raise
            except Exception as exc:  # noqa: BLE001 - isolate: one organisation never stops others
                if self._workers.get(worker.org.id) is worker:
                    self.state[worker.org.id] = "restarting"
                log.error(
                    "delivery task failed: organisation=%s (%s); restarting in %.0fs",
                    worker.org.id,
                    type(exc).__name__,
                    pause,
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 60.0)

    def healthy(self) -> bool:
        """True when every organisation's task is running."""
        return all(s == "running" for s in self.state.values())


def create_app(delivery: FhirDelivery, metrics: Metrics) -> FastAPI:
    """`/health` (per-organisation task states) and `/metrics`, open and PHI-free."""
    app = FastAPI(title="caremesh FHIR delivery", version="1")

    @app.get("/health")
    async def health() -> Response:
        ok = delivery.healthy()
        body = {"status": "ok" if ok else "degraded", "organisations": delivery.state}
        return JSONResponse(body, 200 if ok else 503)

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

    return app


async def serve_delivery(settings: Settings, producer: AsyncProducer, metrics: Metrics) -> None:
    """Deliver and serve /health and /metrics until the HTTP server is told to exit."""
    delivery = FhirDelivery(settings, producer, metrics)
    app = create_app(delivery, metrics)
    freeze_startup_objects()  # what start-up built stays out of the delivery loop's collections
    task = asyncio.create_task(delivery.run(), name="fhir-delivery")
    srv = server(app, settings.delivery.host, settings.delivery.port)
    try:
        await srv.serve()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def run_delivery(settings: Settings) -> int:
    """Run FHIR delivery for every organisation with an endpoint until interrupted; returns 0."""
    producer = AsyncProducer.from_settings(settings.kafka)
    log.info(
        "fhir delivery: %d organisations, metrics on %s:%d",
        sum(1 for o in settings.organisations if o.fhir_endpoint),
        settings.delivery.host,
        settings.delivery.port,
    )
    try:
        asyncio.run(serve_delivery(settings, producer, Metrics()))
    finally:
        producer.close()
    return 0
