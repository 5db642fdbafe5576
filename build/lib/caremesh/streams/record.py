"""A consumed record as plain data: what a stage handler is given.

The runner turns each confluent-kafka message into a `Record` (`to_record`); a clinical.fhir.v1
record's resource is decoded there, once, for every stage, and a value that is not a FHIR
resource is rejected (to the dead letters) before stage code runs. Handlers are module-level
functions of their stage's context and a `Record`, so they are unit-tested without a broker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from caremesh import envelope
from caremesh.errors import RejectedInputError
from caremesh.kafka.client import Message
from caremesh.kafka.io import Output
from caremesh.topics import CLINICAL_FHIR


def record_time(msg: Message) -> float:
    """A record's timestamp in epoch seconds (now when it has none)."""
    _, ms = msg.timestamp()
    return ms / 1000.0 if ms and ms > 0 else time.time()


def patient_of(msg: Message) -> str:
    """The patient key a record is keyed by."""
    return (msg.key() or b"").decode("utf-8", "replace")


RecordHeaders = tuple[tuple[str, str | bytes | None], ...]


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record as plain data: what a stage handler is given.

    `topic` is the catalogue name (`clinical.fhir.v1`), without the deployment's prefix;
    `resource` is the decoded FHIR resource of a clinical.fhir.v1 record (None elsewhere)."""

    topic: str
    key: bytes
    value: bytes | None
    headers: RecordHeaders = ()
    partition: int = 0
    offset: int = 0
    time: float = 0.0
    resource: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def patient(self) -> str:
        """The patient key the record is keyed by."""
        return self.key.decode("utf-8", "replace")

    @property
    def text_headers(self) -> dict[str, str]:
        """The record's headers as text."""
        return envelope.headers_dict(self.headers)

    @property
    def clinical(self) -> dict[str, Any]:
        """The decoded resource of a clinical record (a stage bug if there is none)."""
        if self.resource is None:
            raise RejectedInputError("invalid-record", f"a {self.topic} record has no resource")
        return self.resource


RecordHandler = Callable[[Record], list[Output]]


def decode_clinical(value: bytes | None) -> dict[str, Any]:
    """A clinical.fhir.v1 value as a FHIR resource; a value that is not one is rejected."""
    try:
        resource = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        raise RejectedInputError("invalid-json", "clinical record is not JSON") from None
    if not isinstance(resource, dict):
        raise RejectedInputError("invalid-record", "clinical record is not a FHIR resource")
    return resource


def to_record(msg: Message, prefix: str) -> Record:
    """A consumed message as a `Record` (a clinical record's resource decoded)."""
    topic = (msg.topic() or "").removeprefix(prefix)
    value = msg.value()
    return Record(
        topic=topic,
        key=msg.key() or b"",
        value=value,
        headers=tuple(msg.headers() or ()),  # type: ignore[arg-type]
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        time=record_time(msg),
        resource=decode_clinical(value) if topic == CLINICAL_FHIR else None,
    )
