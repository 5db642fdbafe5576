"""The validate stage's per-message core: ingest.fhir.v1 bytes → clinical.fhir.v1 records.

One message is parsed once (orjson), validated once (see `validate`), and becomes:

- a single resource: one record whose value is the message bytes exactly as received;
- a `batch`, `transaction` or `collection` Bundle: first resolved (`caremesh.fhir.bundle`:
  every entry gets an id, every reference to another entry's fullUrl becomes `Type/id`), then
  one record per entry that has a resource, in entry order, whose value is `orjson.dumps` of
  the resolved entry resource (never a model re-serialisation; JSON whitespace and number
  spelling such as `1.50` → `1.5` may change); entries without a resource (a DELETE) are
  skipped;
- a `document` or `message` Bundle: one record holding the whole Bundle (a document is one
  unit), keyed by the patient of its first entry that points to one;
- any other Bundle type (searchset, history, responses, notifications): a rejection.

Record `i` gets the id `child_message_id(message_id, i)`, `i` being the entry's position in
`Bundle.entry` (0 for a single resource), so ids are stable across replays. Validation is
atomic: one invalid entry rejects the whole Bundle, nothing is half-written (DESIGN §4).
Before validation the message must keep FHIR's JSON rules (`caremesh.fhir.json_rules`: no
repeated key, no empty value, valid `urn:oid:`s, a bounded number of Bundle entries).
Rejections are values (`Rejection(code, detail, issues)`), the codes of `REJECTION_CODES`;
details and issues name elements, never payload values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from caremesh.envelope import MessageId, PatientKey, child_message_id
from caremesh.errors import FhirIssue, InvalidFhirError
from caremesh.fhir.bundle import ERROR_CODES as BUNDLE_CODES
from caremesh.fhir.bundle import resolve_bundle
from caremesh.fhir.json_rules import ERROR_CODES as JSON_RULE_CODES
from caremesh.fhir.json_rules import check_bundle_size, check_json_rules
from caremesh.fhir.patient_key import (
    KeyKind,
    KeyResult,
    LearnedMapping,
    bundle_patient_index,
    patient_key,
)
from caremesh.fhir.validate import ERROR_CODES as VALIDATE_CODES
from caremesh.fhir.validate import Release, parse_json, validate_resource

REJECTION_CODES: Final = (
    *VALIDATE_CODES,
    *JSON_RULE_CODES,
    *BUNDLE_CODES,
    "unsupported-bundle-type",
)
"""Every code a Rejection of `process_ingest` carries."""

SPLIT_BUNDLE_TYPES: Final = frozenset({"batch", "transaction", "collection"})
WHOLE_BUNDLE_TYPES: Final = frozenset({"document", "message"})


@dataclass(frozen=True, slots=True)
class ClinicalRecord:
    """One record for clinical.fhir.v1: one resource, its patient key, release and id."""

    key: PatientKey
    key_kind: KeyKind
    resource_type: str
    release: Release
    message_id: MessageId
    index: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message goes to deadletter.v1: a stable code and a value-free detail."""

    code: str
    detail: str
    issues: tuple[FhirIssue, ...] = ()
    """One per element at fault, when known (each becomes an OperationOutcome issue)."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    """The outcome of one message: records and new learned mappings, or a rejection."""

    records: tuple[ClinicalRecord, ...] = ()
    learned: tuple[LearnedMapping, ...] = ()
    rejection: Rejection | None = None

    @property
    def accepted(self) -> bool:
        """True when the message produced its records (possibly none, for an empty Bundle)."""
        return self.rejection is None


def process_ingest(
    value: bytes,
    source: str,
    message_id: str,
    release_hint: str | None,
    learned: Mapping[str, str],
) -> IngestResult:
    """Validate one ingest.fhir.v1 message and split it into clinical.fhir.v1 records.

    `learned` maps `<source>/Patient/<id>` to an INS (the stage's state); the result's `learned`
    holds the mappings this message teaches that `learned` does not already hold.
    """
    try:
        obj = parse_json(value)
        check_bundle_size(obj)
        valid = validate_resource(obj, release_hint, body=value)
        check_json_rules(value, obj)
        message = _Message(value, source, message_id, valid.release)
        if valid.resource_type == "Bundle":
            return _split_bundle(obj, message, learned)
        child = child_message_id(message_id, 0)
        found = patient_key(obj, source, learned, fallback_id=child)
        record = message.record(found, valid.resource_type, 0, child, value)
        return IngestResult((record,), _new_learned([found], learned))
    except InvalidFhirError as exc:
        return IngestResult(rejection=Rejection(exc.code, exc.detail, exc.issues))


@dataclass(frozen=True, slots=True)
class _Message:
    """The coordinates of the message being split."""

    value: bytes
    source: str
    message_id: str
    release: Release

    def record(
        self, found: KeyResult, resource_type: str, index: int, child: MessageId, value: bytes
    ) -> ClinicalRecord:
        """The record for entry `index` of this message, whose id is `child`."""
        return ClinicalRecord(
            found.key, found.kind, resource_type, self.release, child, index, value
        )


def _split_bundle(
    obj: dict[str, Any], message: _Message, learned: Mapping[str, str]
) -> IngestResult:
    """Records of a validated Bundle: one per entry resource, or one for the whole Bundle."""
    bundle_type = obj.get("type")
    if bundle_type not in SPLIT_BUNDLE_TYPES and bundle_type not in WHOLE_BUNDLE_TYPES:
        raise InvalidFhirError("unsupported-bundle-type", "Bundle.type is not accepted here")
    source = message.source
    entries: list[Any] = obj.get("entry") or []
    children = [child_message_id(message.message_id, index) for index in range(len(entries))]
    resolved = resolve_bundle(entries, children) if bundle_type in SPLIT_BUNDLE_TYPES else []
    patients = bundle_patient_index(entries, source, learned, children)
    new = _new_learned(patients.values(), learned)
    lookup: Mapping[str, str] = learned
    if new:
        lookup = _Layered({mapping.local_key: str(mapping.ins) for mapping in new}, learned)
    if bundle_type in WHOLE_BUNDLE_TYPES:
        first = children[0] if children else child_message_id(message.message_id, 0)
        found = _first_patient(obj, entries, source, lookup, patients=patients, fallback_id=first)
        return IngestResult((message.record(found, "Bundle", 0, first, message.value),), new)
    records = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource")
        value = resolved[index]
        if isinstance(resource, dict) and value is not None:
            found = patient_key(
                resource, source, lookup, bundle_patients=patients, fallback_id=children[index]
            )
            records.append(
                message.record(found, str(resource["resourceType"]), index, children[index], value)
            )
    return IngestResult(tuple(records), new)


def _first_patient(
    bundle: dict[str, Any],
    entries: list[Any],
    source: str,
    lookup: Mapping[str, str],
    *,
    patients: Mapping[str, KeyResult],
    fallback_id: str | None,
) -> KeyResult:
    """The key of a document or message Bundle: the first entry's patient, else the Bundle's own."""
    for entry in entries:
        resource = entry.get("resource")
        if isinstance(resource, dict):
            found = patient_key(resource, source, lookup, bundle_patients=patients)
            if found.kind != "non-patient":
                return KeyResult(found.key, found.kind)
    return patient_key(bundle, source, lookup, fallback_id=fallback_id)


def _new_learned(
    results: Iterable[KeyResult], learned: Mapping[str, str]
) -> tuple[LearnedMapping, ...]:
    """The mappings to learn that `learned` does not already hold, first occurrence wins."""
    out: dict[str, LearnedMapping] = {}
    for found in results:
        mapping = found.learn
        if mapping is None or mapping.local_key in out:
            continue
        if learned.get(mapping.local_key) != mapping.ins:
            out[mapping.local_key] = mapping
    return tuple(out.values())


class _Layered(Mapping[str, str]):
    """This message's new mappings over the stage's (possibly large) table, without copying it."""

    def __init__(self, top: dict[str, str], below: Mapping[str, str]) -> None:
        self._top = top
        self._below = below

    def __getitem__(self, key: str) -> str:
        if key in self._top:
            return self._top[key]
        return self._below[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._top
        yield from (key for key in self._below if key not in self._top)

    def __len__(self) -> int:
        return sum(1 for _ in self)
