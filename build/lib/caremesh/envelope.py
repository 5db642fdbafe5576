"""Record envelope: id types, CloudEvents Kafka-binding headers, stable ids, producer config.

Headers follow the CloudEvents 1.0 Kafka protocol binding (binary content mode): `ce_specversion`,
`ce_id`, `ce_source`, `ce_type`, `ce_time` and `content-type`, plus `caremesh-*` headers. No
patient identifier ever goes into a header.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NewType

PatientKey = NewType("PatientKey", str)
"""The one key per person of DESIGN §3 (INS, learned mapping, or `<source>/Patient/<id>`)."""
MessageId = NewType("MessageId", str)
"""A stable record id, the CloudEvents `ce_id`; sinks drop duplicates by it."""
Pseudonym = NewType("Pseudonym", str)
"""A study pseudonym: the only patient key a research topic ever carries."""
KeyId = NewType("KeyId", str)
"""Identifies a key version (for rotation); never the key material itself."""
SourceId = NewType("SourceId", str)
"""A configured source system (hospital, provider) name."""

FHIR_JSON = "application/fhir+json"
HL7V2 = "x-application/hl7-v2+er7"
CE_SPECVERSION = "1.0"

H_SPECVERSION = "ce_specversion"
H_ID = "ce_id"
H_SOURCE = "ce_source"
H_TYPE = "ce_type"
H_TIME = "ce_time"
H_CONTENT_TYPE = "content-type"
H_FHIR_RELEASE = "caremesh-fhir-release"
H_CORRELATION_ID = "caremesh-correlation-id"
H_CONSENT_DECISIONS = "caremesh-consent-decisions"
H_KEY_ID = "caremesh-key-id"
H_ERROR_CODE = "caremesh-error-code"
H_ERROR_STAGE = "caremesh-error-stage"
H_ERROR_REASON = "caremesh-error-reason"
H_ORIGIN_TOPIC = "caremesh-origin-topic"
H_ORIGIN_PARTITION = "caremesh-origin-partition"
H_ORIGIN_OFFSET = "caremesh-origin-offset"

_NAMESPACE = uuid.UUID("6b1c7f0e-3d2a-5e8f-9a41-0c5d2e7b9f13")

HeaderList = list[tuple[str, str | bytes | None]]
"""Kafka headers as confluent-kafka takes them; caremesh writes bytes values."""


_NAMESPACE_BYTES = _NAMESPACE.bytes


def _uuid5(name: str) -> str:
    """`str(uuid.uuid5(_NAMESPACE, name))` without building UUID objects (hot path)."""
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def message_id(source: str, source_message_id: str) -> MessageId:
    """A stable id for a message a source sent (MSH-10, Bundle.identifier, Idempotency-Key)."""
    return MessageId(_uuid5(f"{source}\x1f{source_message_id}"))


def body_message_id(source: str, body: bytes) -> MessageId:
    """A stable id for a message without an id of its own: a hash of its exact bytes."""
    return message_id(source, "sha256:" + hashlib.sha256(body).hexdigest())


def child_message_id(parent: str, index: int | str) -> MessageId:
    """The id of the n-th record derived from one message (a Bundle entry, a mapped resource)."""
    return MessageId(_uuid5(f"{parent}\x1e{index}"))


@dataclass(frozen=True, slots=True)
class Envelope:
    """The CloudEvents attributes and caremesh headers of one record."""

    id: str
    source: str
    type: str
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    content_type: str = FHIR_JSON
    extra: Mapping[str, str] = field(default_factory=dict)

    def headers(self) -> HeaderList:
        """Kafka headers for this envelope, in a stable order."""
        out: HeaderList = [
            (H_SPECVERSION, CE_SPECVERSION.encode()),
            (H_ID, self.id.encode()),
            (H_SOURCE, self.source.encode()),
            (H_TYPE, self.type.encode()),
            (H_TIME, self.time.isoformat().encode()),
            (H_CONTENT_TYPE, self.content_type.encode()),
        ]
        out.extend((k, v.encode()) for k, v in self.extra.items())
        return out

    def header_map(self) -> dict[str, bytes]:
        """The same headers as a dict, the form Faust's `send` takes."""
        return {k: v.encode() if isinstance(v, str) else (v or b"") for k, v in self.headers()}

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, str | bytes | None]] | None) -> Envelope:
        """Read an envelope back from Kafka headers; missing attributes become empty strings."""
        found = headers_dict(headers)
        time_text = found.pop(H_TIME, "")
        try:
            when = datetime.fromisoformat(time_text) if time_text else datetime.now(UTC)
        except ValueError:
            when = datetime.now(UTC)
        return cls(
            id=found.pop(H_ID, ""),
            source=found.pop(H_SOURCE, ""),
            type=found.pop(H_TYPE, ""),
            time=when,
            content_type=found.pop(H_CONTENT_TYPE, FHIR_JSON),
            extra={k: v for k, v in found.items() if k != H_SPECVERSION},
        )

    def with_extra(self, **values: str) -> Envelope:
        """A copy with more caremesh headers (keys use `_` for `-`)."""
        merged = dict(self.extra)
        merged.update({k.replace("_", "-"): v for k, v in values.items()})
        return Envelope(self.id, self.source, self.type, self.time, self.content_type, merged)


def headers_dict(headers: Iterable[tuple[str, str | bytes | None]] | None) -> dict[str, str]:
    """Kafka headers as a str→str dict (last value wins; undecodable bytes are replaced)."""
    out: dict[str, str] = {}
    for key, value in headers or ():
        out[key] = value if isinstance(value, str) else (value or b"").decode("utf-8", "replace")
    return out


def fhir_event_type(resource_type: str) -> str:
    """The CloudEvents type of a FHIR resource record, e.g. `org.hl7.fhir.Observation`."""
    return f"org.hl7.fhir.{resource_type}"


def header_value(headers: Sequence[tuple[str, str | bytes | None]] | None, name: str) -> str | None:
    """One header's value as text, or None when absent."""
    for key, value in headers or ():
        if key == name:
            return value if isinstance(value, str) else (value or b"").decode("utf-8", "replace")
    return None
