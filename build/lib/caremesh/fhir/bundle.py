"""Resolve a batch, transaction or collection Bundle before its entries are split.

Follows FHIR R4 (4.0.1) §3.1.3.4 / R5 (5.0.0) "Resolving references in Bundles" and the
transaction rule that the receiver replaces `urn:uuid:` / `urn:oid:` placeholders by the ids it
assigns. Once a Bundle is split into one clinical record per entry, its `fullUrl`s are gone, so
every entry first gets an id and every reference to another entry becomes `Type/id`:

- the id of an entry (the source's own local namespace; delivery later maps it to an id unique
  per source, type and local id): its `resource.id` when present; else the uuid of a
  `urn:uuid:<uuid>` fullUrl; else `derived_ids[i]` given by the caller (deterministic, from the
  message id and the entry index);
- a `Reference.reference` anywhere inside an entry resource (any nesting depth, contained
  resources included) that equals an entry's `fullUrl` becomes that entry's `Type/id`; a
  relative reference `Type/id` inside an entry whose fullUrl is a RESTful URL is first read
  against that URL's base (FHIR's rule), so it also finds entries that carry other ids;
- a conditional reference `Type?identifier=system|value` that matches exactly one entry of that
  type by identifier becomes that entry's `Type/id`; otherwise it stays (the recipient resolves
  it, as FHIR servers do);
- a `urn:uuid:` or `urn:oid:` reference that names no entry can never resolve: the Bundle is
  refused (`unresolved-reference`) with the element path, never the value. So is a Bundle in
  which two entries share a fullUrl (`duplicate-full-url`). Other absolute URLs that name no
  entry stay: they point to a server the recipient may reach. `#local` references stay.

An entry that is itself a Bundle (a document inside a transaction) keeps its own references:
they resolve inside it. Entry ids are set in place (the parsed message belongs to its caller);
entries without a resource (a DELETE, a GET in a batch) take no part.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

import orjson

from caremesh.errors import FhirIssue, InvalidFhirError

ERROR_CODES: Final = ("unresolved-reference", "duplicate-full-url", "too-deep")
"""Every code `InvalidFhirError` is raised with by this module."""

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_RESTFUL = re.compile(
    r"(?P<base>https?://.+/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
)
_RELATIVE = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}")
_PLACEHOLDER = ("urn:uuid:", "urn:oid:")
_REFERENCE = re.compile(rb'"reference":"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a fullUrl points once resolved."""

    resource_type: str
    id: str

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"


def entry_id(resource: dict[str, Any], full_url: object, derived: str) -> str:
    """The id an entry resource keeps: its own, else a fullUrl's uuid, else `derived`."""
    own = resource.get("id")
    if isinstance(own, str) and _FHIR_ID.fullmatch(own):
        return own
    if isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
        uuid = full_url[len("urn:uuid:") :]
        if _UUID.fullmatch(uuid):
            return uuid.lower()
    return derived


def resolve_bundle(entries: list[Any], derived_ids: Sequence[str]) -> list[bytes | None]:
    """Every entry resource as resolved JSON: its id set, in-Bundle references as `Type/id`.

    `derived_ids[i]` is the id entry `i` gets when it has neither an id nor a `urn:uuid:` fullUrl
    (a valid FHIR id). Item `i` of the result is the JSON of entry `i`'s resource (None for an
    entry without one). The entry dicts get their ids in place; their references are rewritten
    in the JSON only (one regular-expression pass over orjson's compact text, which writes
    every Reference.reference as `"reference":"..."`), so the cost stays small beside
    validation. Raises InvalidFhirError (codes: ERROR_CODES) with value-free details.
    """
    by_url: dict[str, _Target] = {}
    by_identifier: dict[tuple[str, str, str], list[_Target]] = {}
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        full_url = entry.get("fullUrl")
        resource_type = str(resource.get("resourceType"))
        target = _Target(resource_type, entry_id(resource, full_url, derived_ids[index]))
        resource["id"] = target.id
        if isinstance(full_url, str):
            if full_url in by_url:
                issue = FhirIssue(
                    "duplicate-full-url", f"Bundle.entry[{index}].fullUrl", "repeats an earlier one"
                )
                raise InvalidFhirError(issue.code, f"{issue.expression} {issue.detail}", (issue,))
            by_url[full_url] = target
        _index_identifiers(resource, target, by_identifier)
    out: list[bytes | None] = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            out.append(None)
            continue
        full_url = entry.get("fullUrl")
        inner_type = resource.get("resourceType")
        match = _RESTFUL.fullmatch(full_url) if isinstance(full_url, str) else None
        context = _Context(by_url, by_identifier, match.group("base") if match else None)
        data = _dumps(resource)
        if inner_type != "Bundle" and b'"reference":"' in data:
            where = f"Bundle.entry[{index}].resource"
            data = _REFERENCE.sub(functools.partial(_replace, context, resource, where), data)
        out.append(data)
    return out


@dataclass(frozen=True, slots=True)
class _Context:
    by_url: dict[str, _Target]
    by_identifier: dict[tuple[str, str, str], list[_Target]]
    base: str | None


def _index_identifiers(
    resource: dict[str, Any], target: _Target, out: dict[tuple[str, str, str], list[_Target]]
) -> None:
    identifiers = resource.get("identifier")
    items = identifiers if isinstance(identifiers, list) else [identifiers]
    for item in items:
        if isinstance(item, dict):
            system, value = item.get("system"), item.get("value")
            if isinstance(value, str):
                key = (target.resource_type, system if isinstance(system, str) else "", value)
                out.setdefault(key, []).append(target)


def _replace(context: _Context, resource: Any, where: str, found: re.Match[bytes]) -> bytes:
    """The replacement of one `"reference":"..."` of an entry's JSON."""
    raw = found.group(1)
    value: str = orjson.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()
    try:
        target = _resolve(value, context)
    except _UnresolvedError:
        path = _path_of(resource, value, where) or f"{where}.?"
        text = "names a fullUrl that is not in the Bundle"
        issue = FhirIssue("unresolved-reference", _masked(path), text)
        raise InvalidFhirError(issue.code, f"{issue.expression} {text}", (issue,)) from None
    if target is None:
        return found.group(0)
    return b'"reference":' + orjson.dumps(target)


class _UnresolvedError(Exception):
    """A placeholder reference that names no entry."""


def _path_of(node: Any, value: str, path: str) -> str | None:
    """The location of the first `reference` under `node` that holds `value` (error path only)."""
    if isinstance(node, dict):
        for key, child in node.items():
            if key == "reference" and child == value:
                return f"{path}.reference"
            if isinstance(child, dict | list):
                found = _path_of(child, value, f"{path}.{key}")
                if found is not None:
                    return found
    elif isinstance(node, list):
        for position, item in enumerate(node):
            found = _path_of(item, value, f"{path}[{position}]")
            if found is not None:
                return found
    return None


def _resolve(reference: str, context: _Context) -> str | None:
    """The `Type/id` a reference becomes, or None to leave it as it is."""
    target = context.by_url.get(reference)
    if target is not None:
        return target.reference
    if reference.startswith(_PLACEHOLDER):
        raise _UnresolvedError
    if context.base is not None and _RELATIVE.fullmatch(reference):
        target = context.by_url.get(context.base + reference)
        if target is not None:
            return target.reference
    kind, question, query = reference.partition("?")
    if question and query.startswith("identifier=") and "&" not in query:
        system, bar, value = unquote(query[len("identifier=") :]).partition("|")
        matches = context.by_identifier.get((kind, system, value) if bar else (kind, "", system))
        if matches is not None and len(matches) == 1:
            return matches[0].reference
    return None


_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(\[\d+\])?")


def _masked(path: str) -> str:
    """A path whose segments that do not look like element names are shown as `?`."""
    return ".".join(part if _SEGMENT.fullmatch(part) else "?" for part in path.split("."))


def _dumps(resource: dict[str, Any]) -> bytes:
    """An entry resource as JSON bytes, straight from the parsed dict."""
    try:
        return orjson.dumps(resource)
    except orjson.JSONEncodeError:
        raise InvalidFhirError("too-deep", "an entry resource nests too deeply to encode") from None
