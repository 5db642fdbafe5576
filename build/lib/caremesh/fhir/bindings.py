"""Required value-set bindings of the resource types caremesh carries (fhir.resources skips them).

Codes are those of the value sets bound with strength `required` in FHIR R4 (4.0.1, also used
for R4B 4.3.0, whose codes are the same for these elements) and FHIR R5 (5.0.0), as a strict
server (HAPI FHIR's validator) checks them. A `code` element must hold one of the codes; a
required CodeableConcept (Condition and AllergyIntolerance statuses) must hold at least one
coding of the value set's code system, and every coding of that system must hold one of its
codes. Element paths go through backbone elements and arrays (`statusHistory.status`).

Extensible and preferred bindings (R4 `Encounter.class`, most codes) are not checked: a strict
server only warns on them. Errors name the element, never the value it held.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from caremesh.errors import FhirIssue

CODE: Final = "invalid-code"
"""The issue code of a value outside its required value set."""

BindingFamily = Literal["R4", "R5"]

_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"


@dataclass(frozen=True, slots=True)
class Binding:
    """One required binding: an element path (from the resource), its codes, and for a
    CodeableConcept the code system its codings must use."""

    path: tuple[str, ...]
    codes: frozenset[str]
    system: str | None = None


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


GENDER = _codes("male female other unknown")
EVENT_STATUS = _codes(
    "preparation in-progress not-done on-hold stopped completed entered-in-error unknown"
)
REQUEST_STATUS = _codes("draft active on-hold revoked completed entered-in-error unknown")
REQUEST_INTENT = _codes(
    "proposal plan directive order original-order reflex-order filler-order instance-order option"
)
MED_REQUEST_INTENT = _codes(
    "proposal plan order original-order reflex-order filler-order instance-order option"
)
PRIORITY = _codes("routine urgent asap stat")
OBSERVATION_STATUS = _codes(
    "registered preliminary final amended corrected cancelled entered-in-error unknown"
)
CONDITION_VERIFICATION = _codes(
    "unconfirmed provisional differential confirmed refuted entered-in-error"
)

_COMMON: Final[Mapping[str, tuple[Binding, ...]]] = {
    "Patient": (
        Binding(("gender",), GENDER),
        Binding(("contact", "gender"), GENDER),
        Binding(("link", "type"), _codes("replaced-by replaces refer seealso")),
    ),
    "Practitioner": (Binding(("gender",), GENDER),),
    "RelatedPerson": (Binding(("gender",), GENDER),),
    "Person": (Binding(("gender",), GENDER),),
    "Observation": (Binding(("status",), OBSERVATION_STATUS),),
    "EpisodeOfCare": (
        Binding(
            ("status",),
            _codes("planned waitlist active onhold finished cancelled entered-in-error"),
        ),
        Binding(
            ("statusHistory", "status"),
            _codes("planned waitlist active onhold finished cancelled entered-in-error"),
        ),
    ),
    "CareTeam": (
        Binding(("status",), _codes("proposed active suspended inactive entered-in-error")),
    ),
    "Communication": (
        Binding(("status",), EVENT_STATUS),
        Binding(("priority",), PRIORITY),
    ),
    "CommunicationRequest": (
        Binding(("status",), REQUEST_STATUS),
        Binding(("priority",), PRIORITY),
    ),
    "Procedure": (Binding(("status",), EVENT_STATUS),),
    "ServiceRequest": (
        Binding(("status",), REQUEST_STATUS),
        Binding(("intent",), REQUEST_INTENT),
        Binding(("priority",), PRIORITY),
    ),
    "MedicationRequest": (
        Binding(("intent",), MED_REQUEST_INTENT),
        Binding(("priority",), PRIORITY),
    ),
    "Immunization": (Binding(("status",), _codes("completed entered-in-error not-done")),),
    "Flag": (Binding(("status",), _codes("active inactive entered-in-error")),),
    "DocumentReference": (Binding(("status",), _codes("current superseded entered-in-error")),),
    "Task": (
        Binding(
            ("status",),
            _codes(
                "draft requested received accepted rejected ready cancelled in-progress "
                "on-hold failed completed entered-in-error"
            ),
        ),
        Binding(
            ("intent",),
            _codes(
                "unknown proposal plan order original-order reflex-order filler-order "
                "instance-order option"
            ),
        ),
        Binding(("priority",), PRIORITY),
    ),
    "Appointment": (
        Binding(
            ("status",),
            _codes(
                "proposed pending booked arrived fulfilled cancelled noshow entered-in-error "
                "checked-in waitlist"
            ),
        ),
    ),
    "AllergyIntolerance": (
        Binding(
            ("clinicalStatus",),
            _codes("active inactive resolved"),
            _TERMINOLOGY + "allergyintolerance-clinical",
        ),
        Binding(("criticality",), _codes("low high unable-to-assess")),
        Binding(("category",), _codes("food medication environment biologic")),
    ),
    "Bundle": (Binding(("entry", "request", "method"), _codes("GET HEAD POST PUT DELETE PATCH")),),
}

_R4_ONLY: Final[Mapping[str, tuple[Binding, ...]]] = {
    "Encounter": (
        Binding(
            ("status",),
            _codes(
                "planned arrived triaged in-progress onleave finished cancelled "
                "entered-in-error unknown"
            ),
        ),
        Binding(
            ("statusHistory", "status"),
            _codes(
                "planned arrived triaged in-progress onleave finished cancelled "
                "entered-in-error unknown"
            ),
        ),
    ),
    "Condition": (
        Binding(
            ("clinicalStatus",),
            _codes("active recurrence relapse inactive remission resolved"),
            _TERMINOLOGY + "condition-clinical",
        ),
        Binding(
            ("verificationStatus",), CONDITION_VERIFICATION, _TERMINOLOGY + "condition-ver-status"
        ),
    ),
    "MedicationRequest": (
        Binding(
            ("status",),
            _codes("active on-hold cancelled completed entered-in-error stopped draft unknown"),
        ),
    ),
    "MedicationStatement": (
        Binding(
            ("status",),
            _codes("active completed entered-in-error intended stopped on-hold unknown not-taken"),
        ),
    ),
    "DiagnosticReport": (
        Binding(
            ("status",),
            _codes(
                "registered partial preliminary final amended corrected appended cancelled "
                "entered-in-error unknown"
            ),
        ),
    ),
    "CarePlan": (
        Binding(("status",), REQUEST_STATUS),
        Binding(("intent",), _codes("proposal plan order option")),
    ),
    "Consent": (
        Binding(("status",), _codes("draft proposed active rejected inactive entered-in-error")),
    ),
    "Composition": (Binding(("status",), _codes("preliminary final amended entered-in-error")),),
    "AllergyIntolerance": (
        Binding(
            ("verificationStatus",),
            _codes("unconfirmed confirmed refuted entered-in-error"),
            _TERMINOLOGY + "allergyintolerance-verification",
        ),
        Binding(("type",), _codes("allergy intolerance")),
    ),
}

_R5_ONLY: Final[Mapping[str, tuple[Binding, ...]]] = {
    "Encounter": (
        Binding(
            ("status",),
            _codes(
                "planned in-progress on-hold discharged completed cancelled discontinued "
                "entered-in-error unknown"
            ),
        ),
    ),
    "Condition": (
        Binding(
            ("clinicalStatus",),
            _codes("active recurrence relapse inactive remission resolved unknown"),
            _TERMINOLOGY + "condition-clinical",
        ),
        Binding(
            ("verificationStatus",), CONDITION_VERIFICATION, _TERMINOLOGY + "condition-ver-status"
        ),
    ),
    "MedicationRequest": (
        Binding(
            ("status",),
            _codes(
                "active on-hold ended stopped completed cancelled entered-in-error draft unknown"
            ),
        ),
    ),
    "MedicationStatement": (Binding(("status",), _codes("recorded entered-in-error draft")),),
    "DiagnosticReport": (
        Binding(
            ("status",),
            _codes(
                "registered partial preliminary modified final amended corrected appended "
                "cancelled entered-in-error unknown"
            ),
        ),
    ),
    "CarePlan": (
        Binding(("status",), REQUEST_STATUS),
        Binding(("intent",), _codes("proposal plan order option directive")),
    ),
    "Consent": (
        Binding(("status",), _codes("draft active inactive not-done entered-in-error unknown")),
    ),
    "Composition": (
        Binding(
            ("status",),
            _codes(
                "registered partial preliminary final amended corrected appended cancelled "
                "entered-in-error deprecated unknown"
            ),
        ),
    ),
    "AllergyIntolerance": (
        Binding(
            ("verificationStatus",),
            _codes("unconfirmed presumed confirmed refuted entered-in-error"),
            _TERMINOLOGY + "allergyintolerance-verification",
        ),
    ),
}


def _merge(*tables: Mapping[str, tuple[Binding, ...]]) -> dict[str, tuple[Binding, ...]]:
    out: dict[str, tuple[Binding, ...]] = {}
    for table in tables:
        for resource_type, bindings in table.items():
            out[resource_type] = out.get(resource_type, ()) + bindings
    return out


BINDINGS: Final[Mapping[BindingFamily, Mapping[str, tuple[Binding, ...]]]] = {
    "R4": _merge(_COMMON, _R4_ONLY),
    "R5": _merge(_COMMON, _R5_ONLY),
}
"""Required bindings per release family and resource type."""


def binding_issues(
    resource: Mapping[str, Any], family: BindingFamily, path: str
) -> list[FhirIssue]:
    """The required-binding violations of one resource (and of contained resources).

    `path` is the resource's own location (`Observation`, `Bundle.entry[2].resource`).
    """
    issues: list[FhirIssue] = []
    table = BINDINGS[family]
    bindings = table.get(str(resource.get("resourceType")), ())
    for binding in bindings:
        for where, value in _values(resource, binding.path, path):
            if not _allowed(value, binding):
                issues.append(
                    FhirIssue(CODE, where, "is not a code of the element's required value set")
                )
    contained = resource.get("contained")
    if isinstance(contained, list):
        for index, inner in enumerate(contained):
            if isinstance(inner, dict):
                issues.extend(binding_issues(inner, family, f"{path}.contained[{index}]"))
    return issues


def _values(node: Any, path: tuple[str, ...], where: str) -> Iterator[tuple[str, Any]]:
    """Every value at `path` under `node`, with its location; arrays are walked."""
    if not path:
        yield where, node
        return
    if not isinstance(node, Mapping) or path[0] not in node:
        return
    child = node[path[0]]
    here = f"{where}.{path[0]}"
    if isinstance(child, list):
        for index, item in enumerate(child):
            yield from _values(item, path[1:], f"{here}[{index}]")
        return
    yield from _values(child, path[1:], here)


def _allowed(value: Any, binding: Binding) -> bool:
    """Whether one code (or CodeableConcept) satisfies a required binding."""
    if binding.system is None:
        return isinstance(value, str) and value in binding.codes
    if not isinstance(value, Mapping):
        return False
    codings = value.get("coding")
    if not isinstance(codings, list):
        return False
    found = False
    for coding in codings:
        if isinstance(coding, Mapping) and coding.get("system") == binding.system:
            if coding.get("code") not in binding.codes:
                return False
            found = True
    return found
