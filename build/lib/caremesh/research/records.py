"""The study topic's record format (`research.<study>.v1`), written and read here only.

A study topic, keyed by study pseudonym, holds two kinds of JSON records:

- a pseudonymised FHIR resource (any `resourceType`), written by the research stage;
- a retraction `{"caremeshEvent": "retraction", "study", "pseudonym", "reason", "at"}`, written
  on a consent withdrawal (`consent-withdrawn`) or an erasure (`erasure`): the study must delete
  everything it holds under that pseudonym.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from caremesh.consent.erasure import REASON_WITHDRAWN
from caremesh.errors import RejectedInputError

RETRACTION: Final = "retraction"
"""The `caremeshEvent` of a retraction record."""
INVALID_RECORD: Final = "export-invalid-record"
"""Error code of a study-topic record that is neither a resource nor a retraction."""


def retraction_value(
    study: str, pseudonym: str, at: datetime, reason: str = REASON_WITHDRAWN
) -> bytes:
    """A retraction record: the study must delete everything it holds under `pseudonym`."""
    return orjson.dumps(
        {
            "caremeshEvent": RETRACTION,
            "study": study,
            "pseudonym": pseudonym,
            "reason": reason,
            "at": at.isoformat(),
        }
    )


@dataclass(frozen=True, slots=True)
class StudyResource:
    """One pseudonymised resource of a study topic, with where it was read."""

    pseudonym: str
    partition: int
    offset: int
    key_id: str | None
    resource: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Retraction:
    """A retraction of a study topic: drop what came before it under `pseudonym`."""

    pseudonym: str
    partition: int
    offset: int
    reason: str


def read_record(
    key: bytes | None, value: bytes | None, partition: int, offset: int, key_id: str | None
) -> StudyResource | Retraction:
    """One study-topic record, as a resource or a retraction.

    Raises `RejectedInputError` (code `export-invalid-record`, coordinates only) for a record
    without a key, without a JSON object value, or a retraction without a pseudonym.
    """
    where = f"partition {partition} offset {offset}"
    if not key:
        raise RejectedInputError(INVALID_RECORD, f"{where}: no pseudonym key")
    try:
        body = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        raise RejectedInputError(INVALID_RECORD, f"{where}: not JSON") from None
    if not isinstance(body, dict):
        raise RejectedInputError(INVALID_RECORD, f"{where}: not a JSON object")
    pseudonym = key.decode("utf-8", "replace")
    if body.get("caremeshEvent") == RETRACTION:
        named = body.get("pseudonym", pseudonym)
        if not isinstance(named, str) or not named:
            raise RejectedInputError(INVALID_RECORD, f"{where}: retraction without pseudonym")
        return Retraction(named, partition, offset, str(body.get("reason", "")))
    if not isinstance(body.get("resourceType"), str):
        raise RejectedInputError(INVALID_RECORD, f"{where}: no resourceType")
    return StudyResource(pseudonym, partition, offset, key_id, body)
