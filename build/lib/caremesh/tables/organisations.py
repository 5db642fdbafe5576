"""The organisations registry on `organisations.v1`: what `org add`/`org remove` publish, and
what every share stage and delivery connector follows, on whichever host it runs.

A record is keyed by the organisation id; its value is the organisation's public registration,
JSON `{id, name, territory, fhir_endpoint, subscriptions, delivery_mode, fhir_release, status,
changed_at}` with `status` `active` or `removed` (one without `delivery_mode` is `rest`, one
without `fhir_release` is R4). No secret goes there (the endpoint token stays in the
configuration, the SCRAM password in the admin's secret file). The topic is compacted with one
partition, so the latest registration of each organisation is kept for ever, in the order it was
written; a `removed` record (rather than a tombstone) keeps a revocation in force for processes
that start later. A tombstone forgets a registration.

The organisations a process works with are the configured ones (`CAREMESH_ORGANISATIONS`) and
the active registrations: a configured organisation wins over a registration with the same id
(the configuration carries its endpoint token), and a `removed` registration removes even a
configured organisation (a revocation always wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

import orjson
from pydantic import ValidationError

from caremesh import topics
from caremesh.errors import KafkaUnavailableError
from caremesh.kafka.client import AioKafkaError as KafkaError
from caremesh.kafka.config import KafkaTarget, confluent_config
from caremesh.kafka.reading import open_from_beginning
from caremesh.settings import DeliveryMode, FhirRelease, OrganisationSettings, Settings

log = logging.getLogger(__name__)

Status = Literal["active", "removed"]
RETRY_SECONDS: Final = 2.0
_RELEASES: Final[dict[object, FhirRelease]] = {"R4": "R4", "R4B": "R4B", "R5": "R5"}


@dataclass(frozen=True, slots=True)
class Registration:
    """One organisation's public registration, as written on organisations.v1."""

    id: str
    status: Status = "active"
    territory: str = ""
    name: str = ""
    fhir_endpoint: str | None = None
    subscriptions: tuple[str, ...] = ()
    delivery_mode: DeliveryMode = "rest"
    fhir_release: FhirRelease = "R4"
    changed_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def active(self) -> bool:
        return self.status == "active"

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "name": self.name,
                "territory": self.territory,
                "fhir_endpoint": self.fhir_endpoint,
                "subscriptions": list(self.subscriptions),
                "delivery_mode": self.delivery_mode,
                "fhir_release": self.fhir_release,
                "status": self.status,
                "changed_at": self.changed_at,
            }
        )

    def settings(self) -> OrganisationSettings:
        """The registration as an organisation of the configuration (without a token)."""
        return OrganisationSettings(
            id=self.id,
            name=self.name,
            fhir_endpoint=self.fhir_endpoint,
            subscriptions=list(self.subscriptions),
            delivery_mode=self.delivery_mode,
            fhir_release=self.fhir_release,
        )

    @classmethod
    def parse(cls, key: bytes | None, value: bytes) -> Registration | None:
        """The registration of one record, or None when it is malformed (logged by code)."""
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError:
            data = None
        if (
            not isinstance(data, dict)
            or not key
            or data.get("id") != key.decode("utf-8", "replace")
        ):
            log.warning("organisation registry record skipped: invalid-registration")
            return None
        status = data.get("status")
        subscriptions = data.get("subscriptions") or []
        endpoint = data.get("fhir_endpoint")
        mode = data.get("delivery_mode") or "rest"
        release = data.get("fhir_release") or "R4"  # registrations written before it: R4
        if (
            mode not in ("rest", "transaction")
            or status not in ("active", "removed")
            or not isinstance(subscriptions, list)
            or not all(isinstance(s, str) for s in subscriptions)
            or not (endpoint is None or isinstance(endpoint, str))
            or release not in _RELEASES
        ):
            log.warning("organisation registry record skipped: invalid-registration")
            return None
        found = cls(
            id=str(data["id"]),
            status=status,
            territory=str(data.get("territory") or ""),
            name=str(data.get("name") or ""),
            fhir_endpoint=endpoint,
            subscriptions=tuple(subscriptions),
            delivery_mode="transaction" if mode == "transaction" else "rest",
            fhir_release=_RELEASES[release],
            changed_at=str(data.get("changed_at") or ""),
        )
        try:
            found.settings()  # the id and the endpoint must be valid settings
        except ValidationError:
            log.warning("organisation registry record skipped: invalid-registration")
            return None
        return found


def effective(
    configured: Iterable[OrganisationSettings], registered: Mapping[str, Registration]
) -> dict[str, OrganisationSettings]:
    """The organisations to work with: configured ones win, `removed` registrations remove."""
    out = {o.id: o for o in configured}
    for reg in registered.values():
        if not reg.active:
            out.pop(reg.id, None)
        elif reg.id not in out:
            out[reg.id] = reg.settings()
    return out


class OrganisationRegistry:
    """The configured organisations plus the registrations folded from organisations.v1."""

    def __init__(self, configured: Iterable[OrganisationSettings] = ()) -> None:
        self.configured = list(configured)
        self.registered: dict[str, Registration] = {}
        self._refresh()

    def _refresh(self) -> None:
        self.organisations = effective(self.configured, self.registered)
        self.known = frozenset(self.organisations)
        self.subscriptions = {o.id: frozenset(o.subscriptions) for o in self.organisations.values()}

    def apply(self, key: bytes | None, value: bytes | None) -> str | None:
        """Fold one record; returns the organisation id when its effective entry changed."""
        if not key:
            return None
        org = key.decode("utf-8", "replace")
        before = self.organisations.get(org)
        if value is None:
            self.registered.pop(org, None)
        else:
            reg = Registration.parse(key, value)
            if reg is None:
                return None
            self.registered[org] = reg
        self._refresh()
        return org if self.organisations.get(org) != before else None


async def follow(
    registry: OrganisationRegistry,
    kafka: KafkaTarget,
    topic: str,
    on_change: Callable[[str], Awaitable[None] | None] | None = None,
    *,
    retry: float = RETRY_SECONDS,
) -> None:
    """Fold `topic` into `registry` from its beginning, for ever (until cancelled).

    A missing topic or an unreachable broker is retried every `retry` seconds; the configured
    organisations work meanwhile. `on_change(org_id)` runs after each effective change.
    """
    warned = False
    while True:
        try:
            consumer, _ = await open_from_beginning(kafka, [topic])
        except (KafkaUnavailableError, KafkaError, OSError) as exc:
            if not warned:
                log.warning("organisation registry not readable yet (%s)", type(exc).__name__)
                warned = True
            await asyncio.sleep(retry)
            continue
        log.info("organisation registry: following %s", topic)
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        org = registry.apply(record.key, record.value)
                        if org is None:
                            continue
                        state = "active" if org in registry.known else "removed"
                        log.info("organisation registry: organisation=%s %s", org, state)
                        if on_change is not None:
                            done = on_change(org)
                            if done is not None:
                                await done
        except KafkaError as exc:
            log.warning("organisation registry reader failed (%s); reopening", type(exc).__name__)
            await asyncio.sleep(retry)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()


def read_registrations(
    kafka: KafkaTarget, topic: str, timeout: float = 30.0
) -> dict[str, Registration]:
    """Every current registration of `topic` (empty when the topic does not exist)."""
    from caremesh.kafka.client import Consumer, KafkaException, TopicPartition  # noqa: PLC0415
    from caremesh.kafka.reading import partition_ids  # noqa: PLC0415
    from caremesh.kafka.retry import watermark_offsets  # noqa: PLC0415

    partitions = partition_ids(kafka, topic)
    if not partitions:
        return {}
    consumer = Consumer(
        confluent_config(
            kafka,
            **{
                "group.id": "caremesh-registry-reader",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            },
        )
    )
    found: dict[str, Registration] = {}
    try:
        for partition in partitions:
            tp = TopicPartition(topic, partition)
            low, high = watermark_offsets(consumer, tp, timeout)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            position = low
            until = time.monotonic() + timeout
            while position < high:
                if time.monotonic() > until:
                    raise KafkaUnavailableError(f"registry {topic} not read to its end")
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error() is not None:
                    continue
                position = int(msg.offset() or 0) + 1
                key = msg.key()
                value = msg.value()
                if not key:
                    continue
                if value is None:
                    found.pop(key.decode("utf-8", "replace"), None)
                    continue
                reg = Registration.parse(key, value)
                if reg is not None:
                    found[reg.id] = reg
    except KafkaException as exc:
        raise KafkaUnavailableError(f"registry {topic} not readable") from exc
    finally:
        consumer.close()
    return found


def publish(
    kafka: KafkaTarget, topic: str, registration: Registration, timeout: float = 30.0
) -> None:
    """Write one registration and wait for the broker's acknowledgement."""
    from caremesh.kafka.client import Producer  # noqa: PLC0415
    from caremesh.kafka.config import producer_config  # noqa: PLC0415
    from caremesh.kafka.io import Output, produce_and_wait  # noqa: PLC0415

    record = Output(topic, registration.id.encode(), registration.to_json())
    produce_and_wait(
        Producer(producer_config(kafka)), [record], f"registration on {topic}", timeout
    )


def with_registered(settings: Settings) -> Settings:
    """The settings with the registry's organisations merged in (read as the caller's principal).

    Used by the admin's commands (`acl apply`, `org add`) so that what they generate covers the
    admitted members too, and a pruning `acl apply` never revokes them.
    """
    topic = settings.kafka.topic_prefix + topics.ORGANISATIONS
    registered = read_registrations(settings.kafka, topic)
    merged = effective(settings.organisations, registered)
    return settings.model_copy(update={"organisations": list(merged.values())})
