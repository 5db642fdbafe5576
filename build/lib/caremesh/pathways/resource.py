"""What pathway rules read from a FHIR resource: reference, clinical time, codes, value, status.

Reads FHIR R4 (4.0.1) and R5 (5.0.0) JSON as plain dicts: Observation.effective[x]/issued,
Condition.onset[x]/recordedDate, Procedure.performed[x] (R4) / occurrence[x] (R5),
Encounter.period (R4) / actualPeriod (R5), Encounter.class (R4 Coding, R5 CodeableConcept[]),
EpisodeOfCare.type, CarePlan.category and Patient.birthDate. A time is the clinical time of
the resource, never its arrival time; partial dates (year, year-month) give no time.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any, Final

from caremesh.fhir.elements import CLINICAL_DATE_BY_TYPE
from caremesh.pathways.definition import CodeSet, Match
from caremesh.pathways.units import quantity_unit

Resource = Mapping[str, Any]

_VOID_STATUS = frozenset({"entered-in-error", "cancelled", "planned"})
_VOID_VERIFICATION = frozenset({"refuted", "entered-in-error"})
_CODE_ELEMENT = {
    "Observation": "code",
    "Condition": "code",
    "Procedure": "code",
    "Encounter": "type",
    "EpisodeOfCare": "type",
    "CarePlan": "category",
}


def parse_time(value: Any) -> int | None:
    """A FHIR date/dateTime/instant as epoch seconds (UTC if no zone); None when partial/invalid."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def to_epoch(when: datetime) -> int:
    """A datetime as epoch seconds; a naive datetime is taken as UTC."""
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())


def from_epoch(seconds: int) -> str:
    """Epoch seconds as an ISO 8601 UTC instant (a FHIR instant)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def reference(resource: Resource) -> str | None:
    """`Type/id` of a resource, or None when it has no id."""
    kind = resource.get("resourceType")
    ident = resource.get("id")
    if isinstance(kind, str) and isinstance(ident, str) and ident:
        return f"{kind}/{ident}"
    return None


def _period(resource: Resource) -> Mapping[str, Any]:
    period = resource.get("actualPeriod") or resource.get("period")
    return period if isinstance(period, Mapping) else {}


def encounter_period(resource: Resource) -> tuple[int | None, int | None]:
    """(start, end) of an Encounter in epoch seconds."""
    period = _period(resource)
    return parse_time(period.get("start")), parse_time(period.get("end"))


def _first_time(resource: Resource, *paths: str) -> int | None:
    for path in paths:
        node: Any = resource
        for part in path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        found = parse_time(node)
        if found is not None:
            return found
    return None


_TIMED: Final = ("Observation", "Condition", "Procedure", "EpisodeOfCare", "CarePlan")
"""The resource types whose clinical time moves a pathway's windows (Encounter aside)."""


def clinical_time(resource: Resource, at: str = "start") -> int | None:
    """When the resource happened clinically (epoch seconds), or None when it does not say."""
    kind = resource.get("resourceType")
    if kind == "Encounter":
        start, end = encounter_period(resource)
        return end if at == "end" else start
    if kind not in _TIMED:
        return None
    return _first_time(resource, *CLINICAL_DATE_BY_TYPE[str(kind)])


def _concepts(node: Any) -> Iterator[Mapping[str, Any]]:
    items = node if isinstance(node, list) else [node]
    for item in items:
        if isinstance(item, Mapping):
            yield item


def codings(resource: Resource) -> list[tuple[str | None, str | None]]:
    """(system, code) of the element a pathway matches for this resource type."""
    element = _CODE_ELEMENT.get(str(resource.get("resourceType")))
    if element is None:
        return []
    found: list[tuple[str | None, str | None]] = []
    for concept in _concepts(resource.get(element)):
        for coding in _concepts(concept.get("coding")):
            found.append((coding.get("system"), coding.get("code")))
    return found


def in_code_sets(resource: Resource, code_sets: tuple[CodeSet, ...]) -> bool:
    """Whether any coding of the resource is in any of the code sets."""
    return any(cs.matches(system, code) for system, code in codings(resource) for cs in code_sets)


def encounter_classes(resource: Resource) -> set[str]:
    """The class codes of an Encounter (R4 Coding or R5 list of CodeableConcept)."""
    found: set[str] = set()
    for item in _concepts(resource.get("class")):
        code = item.get("code")
        if isinstance(code, str):
            found.add(code)
        for coding in _concepts(item.get("coding")):
            if isinstance(coding.get("code"), str):
                found.add(coding["code"])
    return found


def is_void(resource: Resource) -> bool:
    """Whether the resource records nothing that happened (error, cancelled, planned, refuted)."""
    if resource.get("status") in _VOID_STATUS:
        return True
    verification = resource.get("verificationStatus")
    return any(
        coding.get("code") in _VOID_VERIFICATION
        for concept in _concepts(verification)
        for coding in _concepts(concept.get("coding"))
    )


def matches(match: Match, resource: Resource) -> bool:
    """Whether a (non-void) resource is one a rule's `match` selects; ignores time."""
    kind = resource.get("resourceType")
    if kind not in match.resource_types:
        return False
    if match.codes and not in_code_sets(resource, match.codes):
        return False
    if kind == "Encounter" and match.encounter_classes:
        return bool(encounter_classes(resource) & set(match.encounter_classes))
    return True


def quantity(resource: Resource) -> tuple[float, str] | None:
    """(value, UCUM code) of an Observation's valueQuantity, or None."""
    value = resource.get("valueQuantity")
    if not isinstance(value, Mapping):
        return None
    number = value.get("value")
    unit = quantity_unit(dict(value))
    if isinstance(number, bool) or not isinstance(number, int | float) or unit is None:
        return None
    return float(number), unit


def age_years(birth_date: str, at: int) -> int | None:
    """Completed years at `at` (epoch seconds); a partial birth date counts from its last day."""
    parts = birth_date.split("-")
    try:
        year = int(parts[0])
        month = int(parts[1]) if len(parts) > 1 else 12
        day = int(parts[2][:2]) if len(parts) > 2 else calendar.monthrange(year, month)[1]
        born = date(year, month, day)
    except (ValueError, IndexError):
        return None
    today = datetime.fromtimestamp(at, UTC).date()
    years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return years if years >= 0 else None
