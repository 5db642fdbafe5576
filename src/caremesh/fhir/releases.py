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
- `invalid-in-target`: the result does not validate with the target release's fhir.resources
  models (every result is validated; R4 with the R4B models, as the validate stage does).

R4 and R4B are the same for the carried types, so R4 ↔ R4B is the identity (validated).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from pydantic import ValidationError

from caremesh.fhir.validate import Family, Release, model_class

Json = dict[str, Any]

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
"""Resource types with a conversion (AuditEvent and Consent are not delivered across releases)."""

FAMILY: Final[dict[Release, Family]] = {"R4": "R4B", "R4B": "R4B", "R5": "R5"}
FHIR_VERSION: Final[dict[Release, str]] = {"R4": "4.0", "R4B": "4.3", "R5": "5.0"}
"""The `fhirVersion` MIME-type parameter of each release."""

_CORE: Final = "http://hl7.org/fhir/StructureDefinition/"
"""Core profiles (vital signs...) have one canonical URL in every release."""
CONTAINED_ONLY: Final = frozenset({"Medication", "Goal"})
"""Types converted only when contained (a MedicationRequest's Medication, a CarePlan's Goal)."""
_ELEMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class Unconvertible:
    """No faithful conversion: why (a code) and where (an element path, never a value)."""

    reason_code: str
    element: str


class _Refuse(Exception):  # noqa: N818 - internal control flow, never escapes the module
    def __init__(self, reason_code: str, element: str) -> None:
        super().__init__(reason_code)
        self.unconvertible = Unconvertible(reason_code, element)


def convert(resource: Json, source: Release, target: Release) -> Json | Unconvertible:
    """`resource` (valid in `source`) as a resource valid in `target`, or why it cannot be."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or rtype not in CARRIED:
        return Unconvertible("unsupported-type", "resourceType")
    if source == target:
        return resource
    try:
        out = _convert(copy.deepcopy(resource), rtype, FAMILY[source], FAMILY[target])
    except _Refuse as refused:
        return refused.unconvertible
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


def _convert(res: Json, rtype: str, source: Family, target: Family) -> Json:
    meta = res.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    if profiles and source != target and not all(str(p).startswith(_CORE) for p in profiles):
        raise _Refuse("release-specific-profile", f"{rtype}.meta.profile")
    contained = res.get("contained")
    if isinstance(contained, list):
        res["contained"] = [_contained(item, rtype, source, target) for item in contained]
    if source == target:
        return res
    rules = _UP if target == "R5" else _DOWN
    rules[rtype](res, rtype)
    return res


def _contained(item: Any, parent: str, source: Family, target: Family) -> Any:
    ctype = item.get("resourceType") if isinstance(item, dict) else None
    if not isinstance(ctype, str) or ctype not in CARRIED | CONTAINED_ONLY:
        raise _Refuse("unsupported-type", f"{parent}.contained")
    return _convert(item, ctype, source, target)


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
    return None


# -- helpers ---------------------------------------------------------------------------------


def _take(res: Json, name: str, path: str) -> Any:
    """Remove and return element `name`; refuse if it is a primitive with an extension."""
    if f"_{name}" in res:
        raise _Refuse("primitive-extension", f"{path}.{name}")
    return res.pop(name, None)


def _rename(res: Json, old: str, new: str) -> None:
    if old in res:
        res[new] = res.pop(old)
    if f"_{old}" in res:
        res[f"_{new}"] = res.pop(f"_{old}")


def _code(res: Json, name: str, path: str, table: dict[str, str | None]) -> None:
    """Translate a required-binding code with a ConceptMap table (None: no target)."""
    value = res.get(name)
    if value is None:
        return
    mapped = table.get(value, value) if isinstance(value, str) else value
    if mapped is None:
        raise _Refuse("no-equivalent-code", f"{path}.{name}")
    res[name] = mapped


def _concepts(items: list[Any]) -> list[Json]:
    return [{"concept": c} for c in items]


def _refs(items: list[Any]) -> list[Json]:
    return [{"reference": r} for r in items]


def _split_codeable_references(items: list[Any], path: str) -> tuple[list[Any], list[Any]]:
    """R5 CodeableReference list → (concepts, references); one holding both is refused."""
    concepts: list[Any] = []
    refs: list[Any] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or ("concept" in item and "reference" in item):
            raise _Refuse("cardinality", f"{path}[{index}]")
        if "concept" in item:
            concepts.append(item["concept"])
        if "reference" in item:
            refs.append(item["reference"])
        if set(item) - {"concept", "reference"}:
            raise _Refuse("no-equivalent-element", f"{path}[{index}]")
    return concepts, refs


def _reason_up(
    res: Json, path: str, code: str = "reasonCode", ref: str = "reasonReference"
) -> None:
    reason = _concepts(res.pop(code, None) or []) + _refs(res.pop(ref, None) or [])
    if reason:
        res["reason"] = reason


def _reason_down(
    res: Json, path: str, code: str = "reasonCode", ref: str = "reasonReference"
) -> None:
    concepts, refs = _split_codeable_references(res.pop("reason", None) or [], f"{path}.reason")
    if concepts:
        res[code] = concepts
    if refs:
        res[ref] = refs


def _single(items: Any, path: str) -> Any:
    """The only item of a list, refusing more than one."""
    if not isinstance(items, list):
        return items
    if len(items) > 1:
        raise _Refuse("cardinality", path)
    return items[0] if items else None


def _reference_type(ref: Any) -> str | None:
    text = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(text, str) or text.startswith("#") or "/" not in text:
        return None
    return text.rstrip("/").split("/")[-2]


def _allow(ref: Any, allowed: frozenset[str], path: str) -> None:
    found = _reference_type(ref)
    declared = ref.get("type") if isinstance(ref, dict) else None
    for rtype in (found, declared):
        if rtype is not None and rtype not in allowed:
            raise _Refuse("reference-target", path)


# -- Encounter -------------------------------------------------------------------------------

# ConceptMap-R4-EncounterStatus-R5-EncounterStatus: R4 `finished` is broader than R5
# `completed`/`discharged`; `completed` ("the encounter has ended") is R4's own definition.
_ENC_STATUS_UP: Final[dict[str, str | None]] = {
    "arrived": None,
    "triaged": None,
    "onleave": "on-hold",
    "finished": "completed",
}
_ENC_STATUS_DOWN: Final[dict[str, str | None]] = {
    "discharged": "finished",
    "completed": "finished",
    "discontinued": None,
    "on-hold": "onleave",
}
_R4_ENC_PARTICIPANT: Final = frozenset({"Practitioner", "PractitionerRole", "RelatedPerson"})


def _encounter_up(res: Json, path: str) -> None:
    _code(res, "status", path, _ENC_STATUS_UP)
    for gone in ("statusHistory", "classHistory"):
        if gone in res:
            raise _Refuse("no-equivalent-element", f"{path}.{gone}")
    if "class" in res:
        res["class"] = [{"coding": [res["class"]]}]
    if "serviceType" in res:
        res["serviceType"] = [{"concept": res["serviceType"]}]
    _rename(res, "period", "actualPeriod")
    for part in res.get("participant") or []:
        _rename(part, "individual", "actor")
    _reason_up_encounter(res)
    for index, diag in enumerate(res.get("diagnosis") or []):
        if "rank" in diag:
            raise _Refuse("no-equivalent-element", f"{path}.diagnosis[{index}].rank")
        if "condition" in diag:
            diag["condition"] = [{"reference": diag["condition"]}]
        if "use" in diag:
            diag["use"] = [diag["use"]]
    hosp = res.pop("hospitalization", None)
    if hosp is not None:
        for moved in ("dietPreference", "specialArrangement", "specialCourtesy"):
            if moved in hosp:
                res[moved] = hosp.pop(moved)
        res["admission"] = hosp
    for loc in res.get("location") or []:
        _rename(loc, "physicalType", "form")


def _reason_up_encounter(res: Json) -> None:
    values = _concepts(res.pop("reasonCode", None) or []) + _refs(
        res.pop("reasonReference", None) or []
    )
    if values:
        res["reason"] = [{"value": values}]


def _encounter_down(res: Json, path: str) -> None:
    _code(res, "status", path, _ENC_STATUS_DOWN)
    classes = res.pop("class", None) or []
    if len(classes) > 1:
        raise _Refuse("cardinality", f"{path}.class")
    if not classes:
        raise _Refuse("required-element-missing", f"{path}.class")
    concept = classes[0]
    if set(concept) - {"coding"} or len(concept.get("coding") or []) != 1:
        raise _Refuse("cardinality", f"{path}.class[0]")
    res["class"] = concept["coding"][0]
    if "serviceType" in res:
        concepts, refs = _split_codeable_references(res["serviceType"], f"{path}.serviceType")
        if refs:
            raise _Refuse("reference-target", f"{path}.serviceType")
        res["serviceType"] = _single(concepts, f"{path}.serviceType")
    planned = {k: res.pop(k) for k in ("plannedStartDate", "plannedEndDate") if k in res}
    if planned:
        if res.get("status") != "planned" or "actualPeriod" in res:
            raise _Refuse("no-equivalent-element", f"{path}.{next(iter(planned))}")
        res["period"] = {
            k: v
            for k, v in (
                ("start", planned.get("plannedStartDate")),
                ("end", planned.get("plannedEndDate")),
            )
            if v
        }
    _rename(res, "actualPeriod", "period")
    for index, part in enumerate(res.get("participant") or []):
        if "actor" in part:
            _allow(part["actor"], _R4_ENC_PARTICIPANT, f"{path}.participant[{index}].actor")
        _rename(part, "actor", "individual")
    reasons = res.pop("reason", None) or []
    values: list[Any] = []
    for index, reason in enumerate(reasons):
        if set(reason) - {"value"}:
            raise _Refuse("no-equivalent-element", f"{path}.reason[{index}].use")
        values.extend(reason.get("value") or [])
    concepts, refs = _split_codeable_references(values, f"{path}.reason")
    if concepts:
        res["reasonCode"] = concepts
    if refs:
        res["reasonReference"] = refs
    diagnoses: list[Json] = []
    for index, diag in enumerate(res.pop("diagnosis", None) or []):
        where = f"{path}.diagnosis[{index}]"
        concepts, refs = _split_codeable_references(diag.get("condition") or [], where)
        if concepts:
            raise _Refuse("no-equivalent-element", f"{where}.condition")
        use = _single(diag.get("use"), f"{where}.use")
        for ref in refs:
            item: Json = {k: v for k, v in diag.items() if k not in ("condition", "use")}
            item["condition"] = ref
            if use is not None:
                item["use"] = use
            diagnoses.append(item)
    if diagnoses:
        res["diagnosis"] = diagnoses
    admission = res.pop("admission", None)
    moved = {
        k: res.pop(k)
        for k in ("dietPreference", "specialArrangement", "specialCourtesy")
        if k in res
    }
    if admission is not None or moved:
        res["hospitalization"] = {**(admission or {}), **moved}
    for loc in res.get("location") or []:
        _rename(loc, "form", "physicalType")


# -- Condition, AllergyIntolerance: recorder/asserter ↔ participant ------------------------

_PARTICIPANT_TYPE: Final = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_ROLES: Final = (("recorder", "enterer", "Enterer"), ("asserter", "author", "Author"))


def _participants_up(res: Json) -> None:
    participants = list(res.get("participant") or [])
    for element, code, display in _ROLES:
        if element in res:
            function = {"coding": [{"system": _PARTICIPANT_TYPE, "code": code, "display": display}]}
            participants.append({"function": function, "actor": res.pop(element)})
    if participants:
        res["participant"] = participants


def _participants_down(res: Json, path: str) -> None:
    by_code = {code: element for element, code, _ in _ROLES} | {"informant": "asserter"}
    for index, part in enumerate(res.pop("participant", None) or []):
        where = f"{path}.participant[{index}]"
        codings = (part.get("function") or {}).get("coding") or []
        element = None
        if len(codings) == 1 and codings[0].get("system") == _PARTICIPANT_TYPE:
            element = by_code.get(codings[0].get("code"))
        if element is None or set(part) - {"function", "actor"}:
            raise _Refuse("no-equivalent-element", f"{where}.function")
        if element in res:
            raise _Refuse("cardinality", where)
        res[element] = part["actor"]


def _condition_up(res: Json, path: str) -> None:
    if "clinicalStatus" not in res:
        raise _Refuse("required-element-missing", f"{path}.clinicalStatus")
    _participants_up(res)
    evidence: list[Json] = []
    for item in res.pop("evidence", None) or []:
        evidence += _concepts(item.get("code") or []) + _refs(item.get("detail") or [])
        if set(item) - {"code", "detail"}:
            raise _Refuse("no-equivalent-element", f"{path}.evidence")
    if evidence:
        res["evidence"] = evidence


def _condition_down(res: Json, path: str) -> None:
    _participants_down(res, path)
    evidence = res.pop("evidence", None) or []
    concepts, refs = _split_codeable_references(evidence, f"{path}.evidence")
    out = [{"code": [c]} for c in concepts] + [{"detail": [r]} for r in refs]
    if out:
        res["evidence"] = out


_ALLERGY_TYPE: Final = "http://hl7.org/fhir/allergy-intolerance-type"


def _allergy_up(res: Json, path: str) -> None:
    kind = _take(res, "type", path)
    if kind is not None:
        res["type"] = {
            "coding": [{"system": _ALLERGY_TYPE, "code": kind, "display": kind.capitalize()}]
        }
    _participants_up(res)
    for reaction in res.get("reaction") or []:
        if "manifestation" in reaction:
            reaction["manifestation"] = _concepts(reaction["manifestation"])


def _allergy_down(res: Json, path: str) -> None:
    kind = res.pop("type", None)
    if kind is not None:
        codings = kind.get("coding") or []
        code = codings[0].get("code") if len(codings) == 1 else None
        text = kind.get("text")
        if (
            (codings[0].get("system") not in (None, _ALLERGY_TYPE) if codings else True)
            or code not in ("allergy", "intolerance")
            or (text is not None and text.lower() != str(code))
        ):
            raise _Refuse("no-equivalent-code", f"{path}.type")
        res["type"] = code
    _participants_down(res, path)
    for index, reaction in enumerate(res.get("reaction") or []):
        if "manifestation" in reaction:
            where = f"{path}.reaction[{index}].manifestation"
            concepts, refs = _split_codeable_references(reaction["manifestation"], where)
            if refs:
                raise _Refuse("no-equivalent-element", where)
            reaction["manifestation"] = concepts


# -- MedicationRequest, Procedure -----------------------------------------------------------


def _medication_request_up(res: Json, path: str) -> None:
    if "medicationCodeableConcept" in res:
        res["medication"] = {"concept": res.pop("medicationCodeableConcept")}
    elif "medicationReference" in res:
        res["medication"] = {"reference": res.pop("medicationReference")}
    _reason_up(res, path)
    if "performer" in res:
        res["performer"] = [res["performer"]]
    if "reportedBoolean" in res:
        _rename(res, "reportedBoolean", "reported")
    elif "reportedReference" in res:
        res["informationSource"] = [res.pop("reportedReference")]
        res["reported"] = True
    dispense = res.get("dispenseRequest")
    if isinstance(dispense, dict):
        _rename(dispense, "performer", "dispenser")
    for dosage in res.get("dosageInstruction") or []:
        _dosage_up(dosage)


def _medication_request_down(res: Json, path: str) -> None:
    medication = res.pop("medication", None)
    if medication is not None:
        if "concept" in medication and "reference" not in medication:
            res["medicationCodeableConcept"] = medication["concept"]
        elif "reference" in medication and "concept" not in medication:
            res["medicationReference"] = medication["reference"]
        else:
            raise _Refuse("cardinality", f"{path}.medication")
    _reason_down(res, path)
    if "performer" in res:
        res["performer"] = _single(res["performer"], f"{path}.performer")
    sources = res.pop("informationSource", None) or []
    reported = res.pop("reported", None)
    if sources:
        if reported is False:
            raise _Refuse("no-equivalent-element", f"{path}.informationSource")
        res["reportedReference"] = _single(sources, f"{path}.informationSource")
    elif reported is not None:
        res["reportedBoolean"] = reported
    dispense = res.get("dispenseRequest")
    if isinstance(dispense, dict):
        _rename(dispense, "dispenser", "performer")
    for index, dosage in enumerate(res.get("dosageInstruction") or []):
        _dosage_down(dosage, f"{path}.dosageInstruction[{index}]")


def _dosage_up(dosage: Json) -> None:
    """Dosage: asNeeded[x] → asNeeded + asNeededFor, maxDosePerPeriod becomes a list."""
    _rename(dosage, "asNeededBoolean", "asNeeded")
    if "asNeededCodeableConcept" in dosage:
        dosage["asNeededFor"] = [dosage.pop("asNeededCodeableConcept")]
    if "maxDosePerPeriod" in dosage:
        dosage["maxDosePerPeriod"] = [dosage["maxDosePerPeriod"]]


def _dosage_down(dosage: Json, path: str) -> None:
    needed_for = dosage.pop("asNeededFor", None)
    needed = dosage.get("asNeeded")
    if needed_for:
        if needed is False:
            raise _Refuse("no-equivalent-element", f"{path}.asNeededFor")
        dosage.pop("asNeeded", None)
        dosage["asNeededCodeableConcept"] = _single(needed_for, f"{path}.asNeededFor")
    else:
        _rename(dosage, "asNeeded", "asNeededBoolean")
    if "maxDosePerPeriod" in dosage:
        dosage["maxDosePerPeriod"] = _single(dosage["maxDosePerPeriod"], f"{path}.maxDosePerPeriod")


_PERFORMED: Final = ("DateTime", "Period", "String", "Age", "Range")


def _procedure_up(res: Json, path: str) -> None:
    if "category" in res:
        res["category"] = [res["category"]]
    for suffix in _PERFORMED:
        _rename(res, f"performed{suffix}", f"occurrence{suffix}")
    _reason_up(res, path)
    used = _concepts(res.pop("usedCode", None) or []) + _refs(res.pop("usedReference", None) or [])
    if used:
        res["used"] = used
    complication = _concepts(res.pop("complication", None) or []) + _refs(
        res.pop("complicationDetail", None) or []
    )
    if complication:
        res["complication"] = complication


def _procedure_down(res: Json, path: str) -> None:
    if "category" in res:
        res["category"] = _single(res["category"], f"{path}.category")
    for suffix in _PERFORMED:
        _rename(res, f"occurrence{suffix}", f"performed{suffix}")
    _reason_down(res, path)
    for element, code, ref in (
        ("used", "usedCode", "usedReference"),
        ("complication", "complication", "complicationDetail"),
    ):
        concepts, refs = _split_codeable_references(
            res.pop(element, None) or [], f"{path}.{element}"
        )
        if concepts:
            res[code] = concepts
        if refs:
            res[ref] = refs


# -- Observation, DiagnosticReport ----------------------------------------------------------


def _observation_up(res: Json, path: str) -> None:
    for item in [res, *(res.get("component") or [])]:
        data = item.get("valueSampledData")
        if isinstance(data, dict) and "period" in data:
            data["interval"] = data.pop("period")  # R4: milliseconds between samples
            data["intervalUnit"] = "ms"


def _observation_down(res: Json, path: str) -> None:
    for index, item in enumerate([res, *(res.get("component") or [])]):
        data = item.get("valueSampledData")
        if isinstance(data, dict):
            where = f"{path}.component[{index - 1}]" if index else path
            if data.pop("intervalUnit", "ms") != "ms" or "interval" not in data:
                raise _Refuse("no-equivalent-element", f"{where}.valueSampledData.intervalUnit")
            data["period"] = data.pop("interval")


# ConceptMap-R5-DiagnosticReportStatus-R4: R5 `modified` is narrower than R4 `amended`.
_DR_STATUS_DOWN: Final[dict[str, str | None]] = {"modified": "amended"}


def _diagnostic_report_up(res: Json, path: str) -> None:
    _rename(res, "imagingStudy", "study")


def _diagnostic_report_down(res: Json, path: str) -> None:
    _code(res, "status", path, _DR_STATUS_DOWN)
    _rename(res, "study", "imagingStudy")


# -- CarePlan, CareTeam, EpisodeOfCare --------------------------------------------------------


def _care_plan_up(res: Json, path: str) -> None:
    _rename(res, "author", "custodian")
    if "addresses" in res:
        res["addresses"] = _refs(res["addresses"])
    for index, activity in enumerate(res.get("activity") or []):
        where = f"{path}.activity[{index}]"
        if "detail" in activity:
            raise _Refuse("no-equivalent-element", f"{where}.detail")
        performed = _concepts(activity.pop("outcomeCodeableConcept", None) or []) + _refs(
            activity.pop("outcomeReference", None) or []
        )
        if performed:
            activity["performedActivity"] = performed
        _rename(activity, "reference", "plannedActivityReference")


def _care_plan_down(res: Json, path: str) -> None:
    _rename(res, "custodian", "author")
    if "addresses" in res:
        concepts, refs = _split_codeable_references(res["addresses"], f"{path}.addresses")
        if concepts:
            raise _Refuse("no-equivalent-element", f"{path}.addresses")
        res["addresses"] = refs
    for index, activity in enumerate(res.get("activity") or []):
        where = f"{path}.activity[{index}]"
        concepts, refs = _split_codeable_references(
            activity.pop("performedActivity", None) or [], f"{where}.performedActivity"
        )
        if concepts:
            activity["outcomeCodeableConcept"] = concepts
        if refs:
            activity["outcomeReference"] = refs
        _rename(activity, "plannedActivityReference", "reference")


def _care_team_up(res: Json, path: str) -> None:
    if "encounter" in res:
        raise _Refuse("no-equivalent-element", f"{path}.encounter")
    for index, part in enumerate(res.get("participant") or []):
        if "role" in part:
            part["role"] = _single(part["role"], f"{path}.participant[{index}].role")
        _rename(part, "period", "coveragePeriod")
    _reason_up(res, path)


def _care_team_down(res: Json, path: str) -> None:
    for part in res.get("participant") or []:
        if "role" in part:
            part["role"] = [part["role"]]
        _rename(part, "coveragePeriod", "period")
    _reason_down(res, path)


def _episode_up(res: Json, path: str) -> None:
    for index, diag in enumerate(res.get("diagnosis") or []):
        if "rank" in diag:
            raise _Refuse("no-equivalent-element", f"{path}.diagnosis[{index}].rank")
        if "condition" in diag:
            diag["condition"] = [{"reference": diag["condition"]}]
        _rename(diag, "role", "use")
    _rename(res, "team", "careTeam")


def _episode_down(res: Json, path: str) -> None:
    diagnoses: list[Json] = []
    for index, diag in enumerate(res.pop("diagnosis", None) or []):
        where = f"{path}.diagnosis[{index}]"
        concepts, refs = _split_codeable_references(diag.get("condition") or [], where)
        if concepts:
            raise _Refuse("no-equivalent-element", f"{where}.condition")
        for ref in refs:
            item = {k: v for k, v in diag.items() if k not in ("condition", "use")}
            item["condition"] = ref
            if "use" in diag:
                item["role"] = diag["use"]
            diagnoses.append(item)
    if diagnoses:
        res["diagnosis"] = diagnoses
    _rename(res, "careTeam", "team")


# -- Communication, Task ----------------------------------------------------------------------


def _communication_up(res: Json, path: str) -> None:
    _reason_up(res, path)
    for index, payload in enumerate(res.get("payload") or []):
        if "contentString" in payload:
            text = _take(payload, "contentString", f"{path}.payload[{index}]")
            payload["contentCodeableConcept"] = {"text": text}


def _communication_down(res: Json, path: str) -> None:
    _reason_down(res, path)
    for index, payload in enumerate(res.get("payload") or []):
        concept = payload.pop("contentCodeableConcept", None)
        if concept is not None:
            if set(concept) != {"text"}:
                raise _Refuse(
                    "no-equivalent-element", f"{path}.payload[{index}].contentCodeableConcept"
                )
            payload["contentString"] = concept["text"]


def _task_up(res: Json, path: str) -> None:
    reason = _concepts([res.pop("reasonCode")] if "reasonCode" in res else []) + _refs(
        [res.pop("reasonReference")] if "reasonReference" in res else []
    )
    if reason:
        res["reason"] = reason
    if "performerType" in res:
        res["requestedPerformer"] = _concepts(res.pop("performerType"))


def _task_down(res: Json, path: str) -> None:
    reason = _single(res.pop("reason", None), f"{path}.reason")
    if reason is not None:
        concepts, refs = _split_codeable_references([reason], f"{path}.reason")
        if concepts:
            res["reasonCode"] = concepts[0]
        if refs:
            res["reasonReference"] = refs[0]
    if "requestedPerformer" in res:
        concepts, refs = _split_codeable_references(
            res.pop("requestedPerformer"), f"{path}.requestedPerformer"
        )
        if refs:
            raise _Refuse("no-equivalent-element", f"{path}.requestedPerformer")
        res["performerType"] = concepts


# -- Organization, Practitioner ---------------------------------------------------------------


def _organization_up(res: Json, path: str) -> None:
    contacts = list(res.pop("contact", None) or [])
    for contact in contacts:
        if "name" in contact:
            contact["name"] = [contact["name"]]
    telecom = res.pop("telecom", None)
    addresses = list(res.pop("address", None) or [])
    own: list[Json] = []
    if telecom or addresses:
        first: Json = {"telecom": telecom} if telecom else {}
        if addresses:
            first["address"] = addresses.pop(0)
        own = [first, *({"address": a} for a in addresses)]
    if own or contacts:
        res["contact"] = own + contacts


def _organization_down(res: Json, path: str) -> None:
    contacts: list[Json] = []
    for index, contact in enumerate(res.pop("contact", None) or []):
        if set(contact) <= {"telecom", "address"}:
            if contact.get("telecom"):
                res.setdefault("telecom", []).extend(contact["telecom"])
            if "address" in contact:
                res.setdefault("address", []).append(contact["address"])
            continue
        if "name" in contact:
            contact["name"] = _single(contact["name"], f"{path}.contact[{index}].name")
        contacts.append(contact)
    if contacts:
        res["contact"] = contacts


def _practitioner_up(res: Json, path: str) -> None:
    if "communication" in res:
        res["communication"] = [{"language": c} for c in res["communication"]]


def _practitioner_down(res: Json, path: str) -> None:
    languages: list[Any] = []
    for index, item in enumerate(res.pop("communication", None) or []):
        if set(item) - {"language"}:
            raise _Refuse("no-equivalent-element", f"{path}.communication[{index}].preferred")
        languages.append(item["language"])
    if languages:
        res["communication"] = languages


# -- contained only: Medication, Goal ---------------------------------------------------------


def _medication_up(res: Json, path: str) -> None:
    _rename(res, "manufacturer", "marketingAuthorizationHolder")
    _rename(res, "form", "doseForm")
    for item in res.get("ingredient") or []:
        if "itemCodeableConcept" in item:
            item["item"] = {"concept": item.pop("itemCodeableConcept")}
        elif "itemReference" in item:
            item["item"] = {"reference": item.pop("itemReference")}
        _rename(item, "strength", "strengthRatio")


def _medication_down(res: Json, path: str) -> None:
    _rename(res, "marketingAuthorizationHolder", "manufacturer")
    _rename(res, "doseForm", "form")
    for index, item in enumerate(res.get("ingredient") or []):
        where = f"{path}.ingredient[{index}].item"
        concepts, refs = _split_codeable_references([item.pop("item", {})], where)
        if concepts:
            item["itemCodeableConcept"] = concepts[0]
        if refs:
            item["itemReference"] = refs[0]
        _rename(item, "strengthRatio", "strength")


def _goal_up(res: Json, path: str) -> None:
    _rename(res, "expressedBy", "source")
    outcome = _concepts(res.pop("outcomeCode", None) or []) + _refs(
        res.pop("outcomeReference", None) or []
    )
    if outcome:
        res["outcome"] = outcome


def _goal_down(res: Json, path: str) -> None:
    _rename(res, "source", "expressedBy")
    concepts, refs = _split_codeable_references(res.pop("outcome", None) or [], f"{path}.outcome")
    if concepts:
        res["outcomeCode"] = concepts
    if refs:
        res["outcomeReference"] = refs


def _same(res: Json, path: str) -> None:
    """The structures are the same; what the target lacks is found by validation."""


_Rule = Callable[[Json, str], None]

_UP: Final[dict[str, _Rule]] = {
    "Patient": _same,
    "Encounter": _encounter_up,
    "Observation": _observation_up,
    "Condition": _condition_up,
    "DiagnosticReport": _diagnostic_report_up,
    "MedicationRequest": _medication_request_up,
    "Procedure": _procedure_up,
    "AllergyIntolerance": _allergy_up,
    "CarePlan": _care_plan_up,
    "CareTeam": _care_team_up,
    "EpisodeOfCare": _episode_up,
    "Communication": _communication_up,
    "Flag": _same,
    "Task": _task_up,
    "Organization": _organization_up,
    "Practitioner": _practitioner_up,
    "Medication": _medication_up,
    "Goal": _goal_up,
}
"""R4/R4B → R5, one rule per carried type (FML `<Type>4to5`)."""

_DOWN: Final[dict[str, _Rule]] = {
    "Patient": _same,
    "Encounter": _encounter_down,
    "Observation": _observation_down,
    "Condition": _condition_down,
    "DiagnosticReport": _diagnostic_report_down,
    "MedicationRequest": _medication_request_down,
    "Procedure": _procedure_down,
    "AllergyIntolerance": _allergy_down,
    "CarePlan": _care_plan_down,
    "CareTeam": _care_team_down,
    "EpisodeOfCare": _episode_down,
    "Communication": _communication_down,
    "Flag": _same,
    "Task": _task_down,
    "Organization": _organization_down,
    "Practitioner": _practitioner_down,
    "Medication": _medication_down,
    "Goal": _goal_down,
}
"""R5 → R4/R4B, one rule per carried type (FML `<Type>5to4`)."""
