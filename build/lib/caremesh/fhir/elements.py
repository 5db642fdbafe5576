"""Where a resource says when it happened clinically, defined once (FHIR R4 4.0.1, R5 5.0.0).

"The clinical date of a resource" decides a consent's `dataPeriod` (sharing), the `effective`
column of research exports and the windows of care pathways. Each resource type the platform
carries names its own elements in order of preference; a type not listed falls back to the
generic list, which covers the `[x]` choices of the remaining clinical resources.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

CLINICAL_DATE_BY_TYPE: Final[Mapping[str, tuple[str, ...]]] = {
    "Observation": ("effectiveDateTime", "effectiveInstant", "effectivePeriod.start", "issued"),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod.start", "issued"),
    "Condition": ("onsetDateTime", "onsetPeriod.start", "recordedDate"),
    "Procedure": (
        "performedDateTime",
        "performedPeriod.start",
        "occurrenceDateTime",
        "occurrencePeriod.start",
    ),
    "Encounter": ("actualPeriod.start", "period.start"),
    "EpisodeOfCare": ("period.start",),
    "CarePlan": ("period.start", "created"),
    "MedicationRequest": ("authoredOn",),
    "Immunization": ("occurrenceDateTime",),
}
"""Per resource type, where its clinical date is, in order of preference."""

GENERIC_CLINICAL_DATE: Final = (
    "effectiveDateTime",
    "effectiveInstant",
    "effectivePeriod.start",
    "onsetDateTime",
    "onsetPeriod.start",
    "performedDateTime",
    "performedPeriod.start",
    "recordedDate",
    "issued",
    "authoredOn",
    "occurrenceDateTime",
    "occurrencePeriod.start",
    "period.start",
    "date",
)
"""Where other resource types keep their clinical date."""


def clinical_date_paths(resource_type: str) -> tuple[str, ...]:
    """The element paths holding the clinical date of `resource_type`, in order of preference."""
    return CLINICAL_DATE_BY_TYPE.get(resource_type, GENERIC_CLINICAL_DATE)


def element_at(resource: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of plain JSON (`effectivePeriod.start`), or None."""
    node: Any = resource
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def clinical_date(resource: Mapping[str, Any]) -> str | None:
    """The FHIR date or dateTime the resource is clinically about, as written, or None."""
    for path in clinical_date_paths(str(resource.get("resourceType"))):
        value = element_at(resource, path)
        if isinstance(value, str) and value:
            return value
    return None
