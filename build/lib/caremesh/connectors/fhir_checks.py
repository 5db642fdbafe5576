"""The edge checks of FHIR input (HTTP API and bulk import), and the stable id of a message.

A message is accepted at the edge only if the validate stage will accept it: the checks end with
`caremesh.fhir.ingest.process_ingest`, the stage's own core, so nothing is answered 202 that
would then be dead-lettered. Cheap structural checks of the endpoint (resourceType of the URL,
Bundle type) run first. Rejections are values (`Rejection(code, detail)`), details value-free.

Message ids (DESIGN §4): an `Idempotency-Key` → `message_id(source, key)`; else a Bundle's
`identifier` (`system|value`) → `message_id(source, "<system>|<value>")`; else a hash of the
exact bytes (`body_message_id`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

from caremesh.connectors.ordering import fhir_ordering_key
from caremesh.envelope import MessageId, body_message_id, message_id
from caremesh.errors import InvalidFhirError
from caremesh.fhir.ingest import Rejection, process_ingest
from caremesh.fhir.validate import Release, parse_json

MAX_IDEMPOTENCY_KEY: Final = 256


@dataclass(frozen=True, slots=True)
class Checked:
    """A message that passed the edge checks."""

    resource_type: str
    bundle_type: str | None
    identifier: str | None
    """`system|value` of Bundle.identifier, when the message is a Bundle that has one."""
    resources: int
    """How many clinical records the validate stage will make of it."""
    release: Release | None
    """The release the message validated as (None for an empty Bundle)."""
    ordering_key: str | None = None
    """The one patient the message concerns, which chooses its ingest partition (see
    `caremesh.connectors.ordering`); None when it concerns no patient or several."""


def check_fhir(
    body: bytes,
    *,
    source: str,
    release_hint: str | None,
    expected_type: str | None = None,
    bundle_types: Collection[str] | None = None,
) -> Checked | Rejection:
    """Check one message; `expected_type` is the URL's type, `bundle_types` those of POST /fhir."""
    try:
        obj = parse_json(body)
    except InvalidFhirError as exc:
        return Rejection(exc.code, exc.detail)
    if not isinstance(obj, dict):
        return Rejection("not-an-object", "a FHIR resource must be a JSON object")
    resource_type = obj.get("resourceType")
    if not isinstance(resource_type, str):
        return Rejection("missing-resource-type", "resourceType is missing or not a string")
    if expected_type is not None and resource_type != expected_type:
        return Rejection("resource-type-mismatch", "resourceType differs from the type in the URL")
    bundle_type = obj.get("type") if resource_type == "Bundle" else None
    if bundle_types is not None:
        if resource_type != "Bundle":
            return Rejection("not-a-bundle", "this endpoint takes a batch or transaction Bundle")
        if bundle_type not in bundle_types:
            allowed = ", ".join(sorted(bundle_types))
            return Rejection("unsupported-bundle-type", f"Bundle.type must be one of: {allowed}")
    result = process_ingest(body, source, "", release_hint, {})
    if result.rejection is not None:
        return result.rejection
    release = result.records[0].release if result.records else None
    return Checked(
        resource_type=resource_type,
        bundle_type=bundle_type if isinstance(bundle_type, str) else None,
        identifier=_bundle_identifier(obj) if resource_type == "Bundle" else None,
        resources=len(result.records),
        release=release,
        ordering_key=fhir_ordering_key(result.records),
    )


def stable_message_id(
    source: str, body: bytes, checked: Checked, idempotency_key: str | None = None
) -> MessageId:
    """The `ce_id` of a checked message (see the module docstring for the order)."""
    if idempotency_key:
        return message_id(source, idempotency_key)
    if checked.identifier:
        return message_id(source, checked.identifier)
    return body_message_id(source, body)


def idempotency_key_problem(key: str) -> Rejection | None:
    """A rejection when an `Idempotency-Key` is empty, too long or not visible ASCII."""
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not all("!" <= ch <= "~" for ch in key):
        return Rejection(
            "invalid-idempotency-key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters",
        )
    return None


def _bundle_identifier(obj: dict[str, Any]) -> str | None:
    """`system|value` of Bundle.identifier, or None without a string value."""
    ident = obj.get("identifier")
    if not isinstance(ident, dict):
        return None
    value = ident.get("value")
    system = ident.get("system")
    if not isinstance(value, str) or not value:
        return None
    return f"{system if isinstance(system, str) else ''}|{value}"
