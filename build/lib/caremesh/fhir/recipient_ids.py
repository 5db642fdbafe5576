"""Identity at recipients (DESIGN §8): the ids, references and identifiers a recipient receives.

Several sources use the same local ids (two hospitals both send `Patient/1`), so nothing is
delivered under the id its source gave it. The rules, pure functions over plain data:

- **Resource ids.** A resource of source `S`, type `T`, local id `L` is delivered as
  `T/<recipient_id(S, T, L)>`: `c` followed by the first 32 characters of the lower-case
  base32 (RFC 4648, no padding) of SHA-256(`caremesh-recipient-id/v1|S|T|L`), 33 characters
  of `[a-z2-7]`, a valid FHIR id (≤ 64 of `[A-Za-z0-9.-]`). 160 bits: two distinct
  (source, type, id) triples never meet in practice (the birthday bound is 2^80), and the same
  triple always gives the same id, across replays and processes. A resource without an id
  uses its record's `ce_id` as `L`, so it is still updated in place when sent again.
- **One Patient per person.** A Patient whose key is an INS (`urn:oid:1.2.250.1.213.1.4.8`) is
  delivered as `Patient/<patient_recipient_id(INS)>` (prefix `p`, same construction over
  `caremesh-patient/v1|INS`), whatever source or channel described them. The INS itself is never
  an id: ids travel in URLs and in the recipient's access logs, while the INS travels only in
  the resource body. The hash is not a secret against someone who enumerates INS values (the
  recipient receives the INS anyway); it keeps the INS out of URLs. A Patient without an INS
  stays per source (`recipient_id(S, "Patient", L)`).
- **References.** Every `reference` inside a resource is rewritten the same way: a relative
  `T/L` (a `_history` suffix dropped) becomes `T/<recipient id>`; a `Patient/L` that maps to an
  INS (the Patient's own INS, a `Reference.identifier`, a conditional `Patient?identifier=`, or a
  source id known to stand for that INS) becomes `Patient/<patient_recipient_id(INS)>` and
  carries the INS as `Reference.identifier`, so a receiver can match its own record; another
  rewritten reference carries the source's id as its `identifier` (and its `type`), and one to
  a type the recipient does not receive (not a Patient) keeps only that logical part. Contained
  `#` references, `urn:uuid:` / `urn:oid:` and absolute URLs are kept. A reference to an
  `Organization/<id>` of caremesh's configuration becomes a logical reference (identifier
  `urn:caremesh:organisation|<id>` and the organisation's name as display): no recipient holds
  caremesh's configuration.
- **Provenance.** The source's own id stays as an `identifier` with system
  `urn:caremesh:source:<S>` (the source's `ce_source` URN; value the local id) and
  `meta.source` is that same URN.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from caremesh.fhir.patient_key import (
    INS_SYSTEM,
    find_ins,
    patient_key,
    resolve_reference,
    source_patient_key,
)

SOURCE_SYSTEM_PREFIX: Final = "urn:caremesh:source:"
"""`urn:caremesh:source:<source id>`: the system of a source's own ids, and `meta.source`."""
ORGANISATION_SYSTEM: Final = "urn:caremesh:organisation"
"""Identifier system of caremesh's configured organisations in logical references."""

_ID_CHARS: Final = 32
_FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_RELATIVE: Final = re.compile(r"([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]*)?")
_CONDITIONAL: Final = "Patient?identifier="
_MAX_DEPTH: Final = 64
_NO_IDENTIFIER: Final = frozenset(
    {"AuditEvent", "Binary", "CapabilityStatement", "OperationOutcome", "Parameters", "Provenance"}
)
"""R4 types without an `identifier` element: the source id is in `meta.source` only."""
_ONE_IDENTIFIER: Final = frozenset({"Bundle", "Composition", "QuestionnaireResponse"})
"""R4 types whose `identifier` is 0..1: the source's own identifier is kept when present."""


def _digest_id(prefix: str, text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return prefix + base64.b32encode(digest).decode("ascii").lower()[:_ID_CHARS]


def recipient_id(source: str, resource_type: str, local_id: str) -> str:
    """The id of (source, type, local id) at every recipient: stable, and unique per triple."""
    return _digest_id("c", f"caremesh-recipient-id/v1|{source}|{resource_type}|{local_id}")


def patient_recipient_id(ins: str) -> str:
    """The id at every recipient of the one Patient of a person with this INS (never the INS)."""
    return _digest_id("p", f"caremesh-patient/v1|{ins}")


def source_system(source: str) -> str:
    """The identifier system of a source's own ids (also `meta.source`)."""
    return SOURCE_SYSTEM_PREFIX + source


def ins_of_key(patient_key: str) -> str | None:
    """The INS a patient key stands for, or None for a source-scoped key (`<source>/...`)."""
    return patient_key if patient_key and "/" not in patient_key else None


def ins_identifier(ins: str) -> dict[str, str]:
    """The INS as a FHIR Identifier."""
    return {"system": INS_SYSTEM, "value": ins}


@dataclass(frozen=True, slots=True)
class RecipientContext:
    """What rewriting one resource for recipients needs to know.

    `links` maps source-scoped patient keys (`<source>/Patient/<id>`) to the INS they stand for;
    `organisations` maps caremesh's configured organisation ids to their display names.
    """

    source: str
    patient_key: str
    fallback_id: str
    links: Mapping[str, str] = field(default_factory=dict)
    organisations: Mapping[str, str] = field(default_factory=dict)


def for_recipients(resource: Mapping[str, Any], ctx: RecipientContext) -> dict[str, Any]:
    """The resource as every recipient receives it (see the module docstring); a new dict."""
    rtype = str(resource.get("resourceType", ""))
    links = _links(resource, ctx)
    out: dict[str, Any] = dict(_rewrite(dict(resource), ctx, links, 0))
    raw_id = resource.get("id")
    local_id = raw_id if isinstance(raw_id, str) and _FHIR_ID.fullmatch(raw_id) else None
    system = source_system(ctx.source)
    if rtype == "Patient":
        ins = find_ins(resource.get("identifier")) or (
            links.get(source_patient_key(ctx.source, local_id)) if local_id else None
        )
        new_id = (
            patient_recipient_id(ins)
            if ins is not None
            else recipient_id(ctx.source, rtype, local_id or ctx.fallback_id)
        )
    else:
        new_id = recipient_id(ctx.source, rtype, local_id or ctx.fallback_id)
    out["id"] = new_id
    if local_id is not None and rtype not in _NO_IDENTIFIER:
        if rtype in _ONE_IDENTIFIER:
            out.setdefault("identifier", {"system": system, "value": local_id})
        else:
            out["identifier"] = _with_identifier(out.get("identifier"), system, local_id)
    meta = dict(out.get("meta") or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    meta["source"] = system
    out["meta"] = meta
    return out


def _with_identifier(current: object, system: str, value: str) -> list[Any]:
    """`current` identifiers plus (system, value)."""
    items = list(current) if isinstance(current, list) else []
    if not any(
        isinstance(i, dict) and i.get("system") == system and i.get("value") == value for i in items
    ):
        items.append({"system": system, "value": value})
    return items


def _links(resource: Mapping[str, Any], ctx: RecipientContext) -> Mapping[str, str]:
    """`ctx.links`, plus what the record's key says about its own patient.

    The validate stage keyed the record by an INS it may have learned from an earlier Patient
    of the source (DESIGN §3): the patient the resource points to then is that INS.
    """
    ins = ins_of_key(ctx.patient_key)
    if ins is None:
        return ctx.links
    links = dict(ctx.links)
    rtype = resource.get("resourceType")
    raw_id = resource.get("id")
    if rtype == "Patient":
        if isinstance(raw_id, str) and _FHIR_ID.fullmatch(raw_id):
            links.setdefault(source_patient_key(ctx.source, raw_id), ins)
        return links
    found = patient_key(resource, ctx.source, links)
    if found.kind == "source" and found.key.startswith(f"{ctx.source}/Patient/"):
        links.setdefault(found.key, ins)
    return links


def _rewrite(value: Any, ctx: RecipientContext, links: Mapping[str, str], depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return value
    if isinstance(value, list):
        return [_rewrite(v, ctx, links, depth + 1) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _rewrite(v, ctx, links, depth + 1) for k, v in value.items()}
    if isinstance(value.get("reference"), str) or (
        value.get("type") == "Patient" and isinstance(value.get("identifier"), dict)
    ):
        return _reference(out, ctx, links)
    return out


def _reference(ref: dict[str, Any], ctx: RecipientContext, links: Mapping[str, str]) -> Any:
    """One Reference as recipients receive it."""
    target = ref.get("reference")
    found = resolve_reference(ref, ctx.source, links)
    if found is not None and found.kind in ("ins", "learned"):
        ins = str(found.key)
        out = dict(ref)
        out["reference"] = f"Patient/{patient_recipient_id(ins)}"
        out["identifier"] = ins_identifier(ins)
        out.setdefault("type", "Patient")
        return out
    if not isinstance(target, str):
        return ref
    if target.startswith(_CONDITIONAL):
        return ref  # a conditional reference the recipient resolves itself
    match = _RELATIVE.fullmatch(target)
    if match is None:
        return ref  # '#contained', urn:uuid:, urn:oid:, absolute URLs
    rtype, local_id = match.group(1), match.group(2)
    if rtype == "Organization" and local_id in ctx.organisations:
        out = {k: v for k, v in ref.items() if k != "reference"}
        out["type"] = "Organization"
        out["identifier"] = {"system": ORGANISATION_SYSTEM, "value": local_id}
        out.setdefault("display", ctx.organisations[local_id] or local_id)
        return out
    out = dict(ref)
    out.setdefault("identifier", {"system": source_system(ctx.source), "value": local_id})
    out.setdefault("type", rtype)
    out["reference"] = f"{rtype}/{recipient_id(ctx.source, rtype, local_id)}"
    return out


def for_recipient_holding(resource: Any, held: frozenset[str], depth: int = 0) -> Any:
    """A recipient-form resource for a recipient that receives only the types `held`.

    A reference to another type (never a Patient: the Patient is always sent first) keeps only
    its logical part (`identifier`, `type`, `display`), so a server that enforces referential
    integrity is never sent a reference to a resource it will not have.
    """
    if depth > _MAX_DEPTH:
        return resource
    if isinstance(resource, list):
        return [for_recipient_holding(v, held, depth + 1) for v in resource]
    if not isinstance(resource, dict):
        return resource
    out = {k: for_recipient_holding(v, held, depth + 1) for k, v in resource.items()}
    target = out.get("reference")
    if isinstance(target, str) and isinstance(out.get("identifier"), dict):
        match = _RELATIVE.fullmatch(target)
        if match is not None and match.group(1) != "Patient" and match.group(1) not in held:
            del out["reference"]
    return out
