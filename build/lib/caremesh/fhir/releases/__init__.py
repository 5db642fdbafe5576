"""Convert a resource between FHIR R4 (4.0.1), R4B (4.3.0) and R5 (5.0.0), or say why it cannot be.

The rules follow HL7's official cross-version mappings (the FHIR Cross-Version Mapping Pack,
github.com/HL7/fhir-cross-version: the FML StructureMaps `<Type>4to5` / `<Type>5to4` and the
ConceptMaps `R4-<ValueSet>-R5-<ValueSet>`) for the resource types the platform carries. No
maintained Python converter exists (the cross-version maps are FML, run by HL7's Java tools), so
the maps are written out here as plain functions over plain JSON.

A conversion is faithful or it is refused: `convert` returns the converted resource, or an
`Unconvertible(reason_code, element)` naming the element (a path, never a value) where
information would be lost or its meaning would change:

- `no-equivalent-code`: a code of a required binding the ConceptMap gives no target for
  (R4 Encounter.status `arrived`/`triaged`, R5 `discontinued`); a source code narrower than its
  target (R5 `completed` → R4 `finished`) converts, since the statement stays true.
- `no-equivalent-element`: an element the target release does not have (R5
  `Encounter.plannedStartDate` outside a planned encounter, R4 `Encounter.classHistory`).
- `cardinality`: more repetitions than the target holds (two R5 `Encounter.class` codings).
- `required-element-missing`: the target requires an element the source did not give
  (R5 `Condition.clinicalStatus`, R4 `Encounter.class`).
- `reference-target`: a reference to a resource type the target element does not allow.
- `primitive-extension`: an extension on a primitive that a conversion restructures.
- `release-specific-profile`: `meta.profile` claims a profile of the source release.
- `unsupported-type`: a resource type outside the carried set.
- `invalid-in-source`: the resource does not have the shape of the release it is labelled with.
- `invalid-in-target`: the result does not validate with the target release's fhir.resources
  models (every result is validated; R4 with the R4B models, as the validate stage does).

R4 and R4B are the same for the carried types, so R4 ↔ R4B is the identity (validated).

Known limit: a converted resource is re-serialised from parsed JSON, so a decimal keeps its
value but not its written precision (`1.50` becomes `1.5`, `1.0e18` an integer literal).
Unconverted records are delivered byte for byte.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Final

import orjson
from pydantic import ValidationError

from caremesh.fhir.releases.common import Json, Refused
from caremesh.fhir.releases.rules import DOWN, UP
from caremesh.fhir.validate import Family, Release, model_class

CARRIED: Final = frozenset(
    {
        "Patient",
        "Encounter",
        "Observation",
        "Condition",
        "DiagnosticReport",
        "MedicationRequest",
        "Procedure",
        "AllergyIntolerance",
        "CarePlan",
        "CareTeam",
        "EpisodeOfCare",
        "Communication",
        "Flag",
        "Task",
        "Organization",
        "Practitioner",
    }
)
"""Resource types with a conversion. AuditEvent (read from audit.v1 by auditors, never an outbox)
and Consent (the consent ledger reads both releases) are refused as `unsupported-type`."""

FAMILY: Final[dict[Release, Family]] = {"R4": "R4B", "R4B": "R4B", "R5": "R5"}

_CORE: Final = "http://hl7.org/fhir/StructureDefinition/"
"""Core profiles (vital signs...) have one canonical URL in every release."""
CONTAINED_ONLY: Final = frozenset({"Medication", "Goal", "Location", "Provenance"})
"""Types converted only when contained (a MedicationRequest's Medication, a CarePlan's Goal,
an Encounter's Location, a Task's Provenance)."""
_ELEMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class Unconvertible:
    """No faithful conversion: why (a code) and where (an element path, never a value)."""

    reason_code: str
    element: str


def convert(resource: Json, source: Release, target: Release) -> Json | Unconvertible:
    """`resource` (valid in `source`) as a resource valid in `target`, or why it cannot be."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or rtype not in CARRIED:
        return Unconvertible("unsupported-type", "resourceType")
    if source == target:
        return resource
    try:
        out = _convert(copy.deepcopy(resource), rtype, FAMILY[source], target)
    except Refused as refused:
        return Unconvertible(refused.reason_code, refused.element)
    except (AttributeError, KeyError, TypeError, IndexError, ValueError):
        # a shape its release label does not fit (a mislabelled record): never an exception
        return Unconvertible("invalid-in-source", rtype)
    problem = validation_problem(out, FAMILY[target])
    return problem or out


def recipient_value(
    value: bytes | None, source: str | None, target: Release
) -> bytes | Unconvertible | None:
    """A delivered record's value in the recipient's release: unchanged when no conversion is due.

    `source` is the record's `caremesh-fhir-release` header (absent: R4, the platform's default).
    R4 and R4B values pass unchanged between each other (the same for the carried types); what
    is not a FHIR resource passes unchanged too, for the caller to refuse as it does today.
    """
    origin = _HEADER_RELEASES.get((source or "R4").strip().upper(), "R4")
    if value is None or FAMILY[origin] == FAMILY[target]:
        return value
    try:
        resource = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    if not isinstance(resource, dict) or "resourceType" not in resource:
        return value
    out = convert(resource, origin, target)
    return out if isinstance(out, Unconvertible) else orjson.dumps(out)


_HEADER_RELEASES: Final[dict[str, Release]] = {"R4": "R4", "R4B": "R4B", "R5": "R5"}


def _convert(res: Json, rtype: str, source: Family, release: Release) -> Json:
    target = FAMILY[release]
    meta = res.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    if profiles and source != target and not all(str(p).startswith(_CORE) for p in profiles):
        raise Refused("release-specific-profile", f"{rtype}.meta.profile")
    contained = res.get("contained")
    if isinstance(contained, list):
        res["contained"] = [_contained(item, rtype, source, release) for item in contained]
    if source == target:
        return res
    rules = UP if target == "R5" else DOWN
    rules[rtype](res, rtype)
    _datatypes(res, rtype, release, 0)
    return res


_ATTACHMENT: Final = frozenset({"contentType", "data", "url", "hash", "title", "creation"})
_NOT_IN_R4: Final = frozenset({"valueCodeableReference", "valueRatioRange", "valueInteger64"})
"""Extension value types R4 does not have (R4B and R5 datatypes)."""
_MAX_UNSIGNED: Final = 2**31 - 1


def _datatypes(value: Any, path: str, target: Release, depth: int) -> None:
    """Datatypes that changed between the releases, wherever they are (contained excepted).

    Attachment.size is an R4 unsignedInt (a JSON number) and an R5 integer64 (a JSON string);
    R4B models accept extension values of R4B types (CodeableReference, RatioRange) that R4
    lacks, so a resource for R4 is refused when it has one.
    """
    if depth > 64:
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _datatypes(item, f"{path}[{index}]", target, depth + 1)
        return
    if not isinstance(value, dict):
        return
    if "size" in value and _ATTACHMENT & value.keys():
        value["size"] = _size(value["size"], f"{path}.size", target)
    for key, item in value.items():
        if key == "contained":
            continue
        if target == "R4" and key in _NOT_IN_R4:
            raise Refused("no-equivalent-element", f"{path}.{key}")
        _datatypes(item, f"{path}.{key}", target, depth + 1)


def _size(size: Any, path: str, target: Release) -> Any:
    if target == "R5":
        return str(size) if isinstance(size, int) else size
    number = int(size) if isinstance(size, str) and size.isdigit() else size
    if isinstance(number, int) and 0 <= number <= _MAX_UNSIGNED:
        return number
    raise Refused("no-equivalent-element", path)


def _contained(item: Any, parent: str, source: Family, release: Release) -> Any:
    ctype = item.get("resourceType") if isinstance(item, dict) else None
    if not isinstance(ctype, str) or ctype not in CARRIED | CONTAINED_ONLY:
        raise Refused("unsupported-type", f"{parent}.contained")
    return _convert(item, ctype, source, release)


def validation_problem(resource: Json, family: Family) -> Unconvertible | None:
    """The first element that does not validate in `family`, or None when the resource does."""
    klass = model_class(str(resource.get("resourceType")), family)
    if klass is None:
        return Unconvertible("unsupported-type", "resourceType")
    try:
        klass.model_validate(resource)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        first = errors[0]
        path = ".".join(
            f"[{p}]" if isinstance(p, int) else (p if _ELEMENT.fullmatch(p) else "?")
            for p in first["loc"]
        ).replace(".[", "[")
        where = f"{resource['resourceType']}.{path}" if path else str(resource["resourceType"])
        code = (
            "no-equivalent-element" if first["type"] == "extra_forbidden" else "invalid-in-target"
        )
        return Unconvertible(code, where)
    except (AttributeError, KeyError, TypeError, IndexError, ValueError, RecursionError):
        return Unconvertible("invalid-in-target", str(resource.get("resourceType")))
    return None
