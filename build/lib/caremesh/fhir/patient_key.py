"""The patient key of DESIGN §3: INS, learned source-id → INS mappings, source-scoped fallback.

Order, for a Patient: the INS in `Patient.identifier` (system `urn:oid:1.2.250.1.213.1.4.8`,
the French national health identifier); else the learned mapping of `<source>/Patient/<id>`;
else `<source>/Patient/<id>` itself. A Patient with an INS and an id also yields the mapping to
learn (`<source>/Patient/<id>` → INS).

For any other resource, the first patient-pointing element that resolves, in the order
`patient`, `subject`, `beneficiary`, `for`, `individual` (plus `participant[].actor` / `actor`
for Appointment, AppointmentResponse and Schedule). Each element may be one Reference or a
list. A Reference resolves, in order, by: an INS in `Reference.identifier`; a reference to a
Patient entry of the same Bundle (by `fullUrl`, e.g. `urn:uuid:…`, or by `Patient/<id>`); a
conditional reference `Patient?identifier=<INS system>|<value>`; `Patient/<id>` (relative or
absolute URL, `_history` ignored) through the learned mapping, else `<source>/Patient/<id>`.
So a reference counts only when it points to a Patient: `subject: Group/1` or a bare
`urn:uuid:` that is not a Patient of the Bundle does not; a Reference whose `type` names
another resource type is skipped.

A resource that points to no patient (Organization, Practitioner, a Group-subject Observation…)
is keyed `<source>/<type>/<id>`; without an id the caller's fallback id (the record's message id)
takes the place of `<id>`.

The learned mappings are a plain `Mapping[str, str]` from `<source>/Patient/<id>` to the INS.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import unquote

from caremesh.envelope import PatientKey

INS_SYSTEM: Final = "urn:oid:1.2.250.1.213.1.4.8"
"""Identifier system of the INS (Identifiant National de Santé), the French national id."""

KeyKind = Literal["ins", "learned", "source", "non-patient"]

_INS_VALUE = re.compile(r"[0-9A-Za-z]{1,40}")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PATIENT_REF = re.compile(r"(?:^|.*/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]*)?")
_CONDITIONAL = "Patient?identifier="
_PATIENT_ELEMENTS: Final = ("patient", "subject", "beneficiary", "for", "individual")
_EXTRA_ELEMENTS: Final[Mapping[str, tuple[tuple[str, str | None], ...]]] = {
    "Appointment": (("participant", "actor"),),
    "AppointmentResponse": (("actor", None),),
    "Schedule": (("actor", None),),
}


@dataclass(frozen=True, slots=True)
class LearnedMapping:
    """A mapping to remember: a source's local patient key → the INS it stands for."""

    local_key: str
    ins: PatientKey


@dataclass(frozen=True, slots=True)
class KeyResult:
    """A patient key, how it was found, and (for a Patient with an INS) the mapping to learn."""

    key: PatientKey
    kind: KeyKind
    learn: LearnedMapping | None = None


def source_patient_key(source: str, patient_id: str) -> PatientKey:
    """The source-scoped key `<source>/Patient/<id>`, also the key of the learned mappings."""
    return PatientKey(f"{source}/Patient/{patient_id}")


def find_ins(identifiers: object) -> str | None:
    """The INS value among FHIR Identifiers (a list, or one Identifier), or None."""
    items = identifiers if isinstance(identifiers, list) else [identifiers]
    for item in items:
        if isinstance(item, dict) and item.get("system") == INS_SYSTEM:
            value = item.get("value")
            if isinstance(value, str) and _INS_VALUE.fullmatch(value):
                return value
    return None


def patient_key(
    resource: Mapping[str, Any],
    source: str,
    learned: Mapping[str, str],
    *,
    bundle_patients: Mapping[str, KeyResult] | None = None,
    fallback_id: str | None = None,
) -> KeyResult:
    """The patient key of one resource (DESIGN §3); see the module docstring for the order.

    `bundle_patients` maps the `fullUrl` and `Patient/<id>` of the Patient entries of the same
    Bundle to their keys; `fallback_id` stands in for a missing resource id.
    """
    resource_type = str(resource.get("resourceType", "Resource"))
    raw_id = resource.get("id")
    own_id = raw_id if isinstance(raw_id, str) and _FHIR_ID.fullmatch(raw_id) else None
    if resource_type == "Patient":
        return _patient_own_key(resource, source, learned, own_id, fallback_id)
    for value in _patient_pointers(resource, resource_type):
        for reference in value if isinstance(value, list) else [value]:
            if _typed_as_other(reference):
                continue
            found = resolve_reference(
                reference,
                source,
                learned,
                bundle_patients=bundle_patients,
            )
            if found is not None:
                return found
    local = own_id or fallback_id
    suffix = f"/{local}" if local else ""
    return KeyResult(PatientKey(f"{source}/{resource_type}{suffix}"), "non-patient")


def resolve_reference(
    reference: object,
    source: str,
    learned: Mapping[str, str],
    *,
    bundle_patients: Mapping[str, KeyResult] | None = None,
) -> KeyResult | None:
    """The patient key a FHIR Reference points to, or None when it does not point to a patient."""
    if not isinstance(reference, dict):
        return None
    ins = find_ins(reference.get("identifier"))
    if ins is not None:
        return KeyResult(PatientKey(ins), "ins")
    target = reference.get("reference")
    if not isinstance(target, str):
        return None
    if bundle_patients is not None and target in bundle_patients:
        return _without_learning(bundle_patients[target])
    if target.startswith(_CONDITIONAL):
        system, _, value = unquote(target[len(_CONDITIONAL) :]).partition("|")
        if system == INS_SYSTEM and _INS_VALUE.fullmatch(value):
            return KeyResult(PatientKey(value), "ins")
        return None
    match = _PATIENT_REF.fullmatch(target)
    if match is None:
        return None
    local_id = match.group(1)
    if bundle_patients is not None and f"Patient/{local_id}" in bundle_patients:
        return _without_learning(bundle_patients[f"Patient/{local_id}"])
    return _local_key(source, local_id, learned)


def bundle_patient_index(
    entries: list[Any], source: str, learned: Mapping[str, str], fallback_ids: Sequence[str]
) -> dict[str, KeyResult]:
    """Keys of a Bundle's Patient entries, by `fullUrl` and by `Patient/<id>`."""
    index: dict[str, KeyResult] = {}
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
            continue
        found = patient_key(resource, source, learned, fallback_id=fallback_ids[position])
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str):
            index[full_url] = found
        raw_id = resource.get("id")
        if isinstance(raw_id, str) and _FHIR_ID.fullmatch(raw_id):
            index[f"Patient/{raw_id}"] = found
    return index


def _patient_own_key(
    resource: Mapping[str, Any],
    source: str,
    learned: Mapping[str, str],
    own_id: str | None,
    fallback_id: str | None,
) -> KeyResult:
    """A Patient's key: its INS (with the mapping to learn), else learned, else source-scoped."""
    ins = find_ins(resource.get("identifier"))
    if ins is not None:
        learn = None
        if own_id is not None:
            learn = LearnedMapping(source_patient_key(source, own_id), PatientKey(ins))
        return KeyResult(PatientKey(ins), "ins", learn)
    if own_id is not None:
        return _local_key(source, own_id, learned)
    suffix = f"/{fallback_id}" if fallback_id else ""
    return KeyResult(PatientKey(f"{source}/Patient{suffix}"), "source")


def _local_key(source: str, local_id: str, learned: Mapping[str, str]) -> KeyResult:
    """`<source>/Patient/<id>` through the learned mappings."""
    local = source_patient_key(source, local_id)
    ins = learned.get(local)
    if ins is not None:
        return KeyResult(PatientKey(ins), "learned")
    return KeyResult(local, "source")


def _without_learning(found: KeyResult) -> KeyResult:
    """A Bundle Patient's key as seen from another entry (only the Patient itself teaches)."""
    return KeyResult(found.key, found.kind)


def _patient_pointers(resource: Mapping[str, Any], resource_type: str) -> Iterator[Any]:
    """The References (or lists of them) that may point to the resource's patient, in order."""
    for element in _PATIENT_ELEMENTS:
        value = resource.get(element)
        if value is not None:
            yield value
    for element, child in _EXTRA_ELEMENTS.get(resource_type, ()):
        value = resource.get(element)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if child is None:
                yield item
            elif isinstance(item, dict):
                yield item.get(child)


def _typed_as_other(reference: object) -> bool:
    """Whether a Reference declares a `type` other than Patient."""
    if not isinstance(reference, dict):
        return False
    declared = reference.get("type")
    return declared is not None and declared != "Patient"
