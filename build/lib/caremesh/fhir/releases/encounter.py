"""Encounter between R4 and R5 (FML Encounter4to5 / Encounter5to4, the EncounterStatus maps)."""

from __future__ import annotations

from typing import Any, Final

from caremesh.fhir.releases.common import (
    Json,
    Refused,
    allow_targets,
    as_concepts,
    as_references,
    rename,
    single,
    split_codeable_references,
    translate_code,
)

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


def encounter_up(res: Json, path: str) -> None:
    translate_code(res, "status", path, _ENC_STATUS_UP)
    for gone in ("statusHistory", "classHistory"):
        if gone in res:
            raise Refused("no-equivalent-element", f"{path}.{gone}")
    if "class" in res:
        res["class"] = [{"coding": [res["class"]]}]
    if "serviceType" in res:
        res["serviceType"] = [{"concept": res["serviceType"]}]
    rename(res, "period", "actualPeriod")
    for part in res.get("participant") or []:
        rename(part, "individual", "actor")
    _reason_up_encounter(res)
    for index, diag in enumerate(res.get("diagnosis") or []):
        if "rank" in diag:
            raise Refused("no-equivalent-element", f"{path}.diagnosis[{index}].rank")
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
        rename(loc, "physicalType", "form")


def _reason_up_encounter(res: Json) -> None:
    values = as_concepts(res.pop("reasonCode", None) or []) + as_references(
        res.pop("reasonReference", None) or []
    )
    if values:
        res["reason"] = [{"value": values}]


def encounter_down(res: Json, path: str) -> None:
    translate_code(res, "status", path, _ENC_STATUS_DOWN)
    classes = res.pop("class", None) or []
    if len(classes) > 1:
        raise Refused("cardinality", f"{path}.class")
    if not classes:
        raise Refused("required-element-missing", f"{path}.class")
    concept = classes[0]
    if set(concept) - {"coding"} or len(concept.get("coding") or []) != 1:
        raise Refused("cardinality", f"{path}.class[0]")
    res["class"] = concept["coding"][0]
    if "serviceType" in res:
        concepts, refs = split_codeable_references(res["serviceType"], f"{path}.serviceType")
        if refs:
            raise Refused("reference-target", f"{path}.serviceType")
        res["serviceType"] = single(concepts, f"{path}.serviceType")
    planned = {k: res.pop(k) for k in ("plannedStartDate", "plannedEndDate") if k in res}
    if planned:
        if res.get("status") != "planned" or "actualPeriod" in res:
            raise Refused("no-equivalent-element", f"{path}.{next(iter(planned))}")
        res["period"] = {
            k: v
            for k, v in (
                ("start", planned.get("plannedStartDate")),
                ("end", planned.get("plannedEndDate")),
            )
            if v
        }
    rename(res, "actualPeriod", "period")
    for index, part in enumerate(res.get("participant") or []):
        if "actor" in part:
            allow_targets(part["actor"], _R4_ENC_PARTICIPANT, f"{path}.participant[{index}].actor")
        rename(part, "actor", "individual")
    reasons = res.pop("reason", None) or []
    values: list[Any] = []
    for index, reason in enumerate(reasons):
        if set(reason) - {"value"}:
            raise Refused("no-equivalent-element", f"{path}.reason[{index}].use")
        values.extend(reason.get("value") or [])
    concepts, refs = split_codeable_references(values, f"{path}.reason")
    if concepts:
        res["reasonCode"] = concepts
    if refs:
        res["reasonReference"] = refs
    diagnoses: list[Json] = []
    for index, diag in enumerate(res.pop("diagnosis", None) or []):
        where = f"{path}.diagnosis[{index}]"
        concepts, refs = split_codeable_references(diag.get("condition") or [], where)
        if concepts:
            raise Refused("no-equivalent-element", f"{where}.condition")
        use = single(diag.get("use"), f"{where}.use")
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
        rename(loc, "form", "physicalType")
