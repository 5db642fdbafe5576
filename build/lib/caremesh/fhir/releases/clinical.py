"""Condition, AllergyIntolerance, Observation, DiagnosticReport, MedicationRequest (and its
contained Medication), Procedure between R4 and R5 (FML `<Type>4to5` / `<Type>5to4`)."""

from __future__ import annotations

from typing import Final

from caremesh.fhir.releases.common import (
    Json,
    Refused,
    as_concepts,
    as_references,
    reason_down,
    reason_up,
    rename,
    single,
    split_codeable_references,
    take_primitive,
    translate_code,
)

# -- Condition, AllergyIntolerance: recorder/asserter ↔ participant ------------------------

_PARTICIPANT_TYPE: Final = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
_ROLES: Final = (("recorder", "enterer", "Enterer"), ("asserter", "author", "Author"))


def participants_up(res: Json) -> None:
    participants = list(res.get("participant") or [])
    for element, code, display in _ROLES:
        if element in res:
            function = {"coding": [{"system": _PARTICIPANT_TYPE, "code": code, "display": display}]}
            participants.append({"function": function, "actor": res.pop(element)})
    if participants:
        res["participant"] = participants


def participants_down(res: Json, path: str) -> None:
    by_code = {code: element for element, code, _ in _ROLES} | {"informant": "asserter"}
    for index, part in enumerate(res.pop("participant", None) or []):
        where = f"{path}.participant[{index}]"
        codings = (part.get("function") or {}).get("coding") or []
        element = None
        if len(codings) == 1 and codings[0].get("system") == _PARTICIPANT_TYPE:
            element = by_code.get(codings[0].get("code"))
        if element is None or set(part) - {"function", "actor"}:
            raise Refused("no-equivalent-element", f"{where}.function")
        if element in res:
            raise Refused("cardinality", where)
        res[element] = part["actor"]


def condition_up(res: Json, path: str) -> None:
    if "clinicalStatus" not in res:
        raise Refused("required-element-missing", f"{path}.clinicalStatus")
    participants_up(res)
    evidence: list[Json] = []
    for item in res.pop("evidence", None) or []:
        evidence += as_concepts(item.get("code") or []) + as_references(item.get("detail") or [])
        if set(item) - {"code", "detail"}:
            raise Refused("no-equivalent-element", f"{path}.evidence")
    if evidence:
        res["evidence"] = evidence


def condition_down(res: Json, path: str) -> None:
    participants_down(res, path)
    evidence = res.pop("evidence", None) or []
    concepts, refs = split_codeable_references(evidence, f"{path}.evidence")
    out = [{"code": [c]} for c in concepts] + [{"detail": [r]} for r in refs]
    if out:
        res["evidence"] = out


_ALLERGY_TYPE: Final = "http://hl7.org/fhir/allergy-intolerance-type"


def allergy_up(res: Json, path: str) -> None:
    kind = take_primitive(res, "type", path)
    if kind is not None:
        res["type"] = {
            "coding": [{"system": _ALLERGY_TYPE, "code": kind, "display": kind.capitalize()}]
        }
    participants_up(res)
    for reaction in res.get("reaction") or []:
        if "manifestation" in reaction:
            reaction["manifestation"] = as_concepts(reaction["manifestation"])


def allergy_down(res: Json, path: str) -> None:
    verification = (res.get("verificationStatus") or {}).get("coding") or []
    erroneous = any(c.get("code") == "entered-in-error" for c in verification)
    if "clinicalStatus" not in res and not erroneous:  # R4 invariant ait-1
        raise Refused("required-element-missing", f"{path}.clinicalStatus")
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
            raise Refused("no-equivalent-code", f"{path}.type")
        res["type"] = code
    participants_down(res, path)
    for index, reaction in enumerate(res.get("reaction") or []):
        if "manifestation" in reaction:
            where = f"{path}.reaction[{index}].manifestation"
            concepts, refs = split_codeable_references(reaction["manifestation"], where)
            if refs:
                raise Refused("no-equivalent-element", where)
            reaction["manifestation"] = concepts


# -- MedicationRequest, Procedure -----------------------------------------------------------


def medication_request_up(res: Json, path: str) -> None:
    if "medicationCodeableConcept" in res:
        res["medication"] = {"concept": res.pop("medicationCodeableConcept")}
    elif "medicationReference" in res:
        res["medication"] = {"reference": res.pop("medicationReference")}
    reason_up(res, path)
    if "performer" in res:
        res["performer"] = [res["performer"]]
    if "reportedBoolean" in res:
        rename(res, "reportedBoolean", "reported")
    elif "reportedReference" in res:
        res["informationSource"] = [res.pop("reportedReference")]
        res["reported"] = True
    dispense = res.get("dispenseRequest")
    if isinstance(dispense, dict):
        rename(dispense, "performer", "dispenser")
    for dosage in res.get("dosageInstruction") or []:
        dosage_up(dosage)


def medication_request_down(res: Json, path: str) -> None:
    medication = res.pop("medication", None)
    if medication is not None:
        if "concept" in medication and "reference" not in medication:
            res["medicationCodeableConcept"] = medication["concept"]
        elif "reference" in medication and "concept" not in medication:
            res["medicationReference"] = medication["reference"]
        else:
            raise Refused("cardinality", f"{path}.medication")
    reason_down(res, path)
    if "performer" in res:
        res["performer"] = single(res["performer"], f"{path}.performer")
    sources = res.pop("informationSource", None) or []
    reported = res.pop("reported", None)
    if sources:
        if reported is False:
            raise Refused("no-equivalent-element", f"{path}.informationSource")
        res["reportedReference"] = single(sources, f"{path}.informationSource")
    elif reported is not None:
        res["reportedBoolean"] = reported
    dispense = res.get("dispenseRequest")
    if isinstance(dispense, dict):
        rename(dispense, "dispenser", "performer")
    for index, dosage in enumerate(res.get("dosageInstruction") or []):
        dosage_down(dosage, f"{path}.dosageInstruction[{index}]")


def dosage_up(dosage: Json) -> None:
    """Dosage: asNeeded[x] → asNeeded + asNeededFor, maxDosePerPeriod becomes a list."""
    rename(dosage, "asNeededBoolean", "asNeeded")
    if "asNeededCodeableConcept" in dosage:
        dosage["asNeededFor"] = [dosage.pop("asNeededCodeableConcept")]
    if "maxDosePerPeriod" in dosage:
        dosage["maxDosePerPeriod"] = [dosage["maxDosePerPeriod"]]


def dosage_down(dosage: Json, path: str) -> None:
    needed_for = dosage.pop("asNeededFor", None)
    needed = dosage.get("asNeeded")
    if needed_for:
        if needed is False:
            raise Refused("no-equivalent-element", f"{path}.asNeededFor")
        dosage.pop("asNeeded", None)
        dosage["asNeededCodeableConcept"] = single(needed_for, f"{path}.asNeededFor")
    else:
        rename(dosage, "asNeeded", "asNeededBoolean")
    if "maxDosePerPeriod" in dosage:
        dosage["maxDosePerPeriod"] = single(dosage["maxDosePerPeriod"], f"{path}.maxDosePerPeriod")


_PERFORMED: Final = ("DateTime", "Period", "String", "Age", "Range")


def procedure_up(res: Json, path: str) -> None:
    if "category" in res:
        res["category"] = [res["category"]]
    for suffix in _PERFORMED:
        rename(res, f"performed{suffix}", f"occurrence{suffix}")
    reason_up(res, path)
    used = as_concepts(res.pop("usedCode", None) or []) + as_references(
        res.pop("usedReference", None) or []
    )
    if used:
        res["used"] = used
    complication = as_concepts(res.pop("complication", None) or []) + as_references(
        res.pop("complicationDetail", None) or []
    )
    if complication:
        res["complication"] = complication


def procedure_down(res: Json, path: str) -> None:
    if "category" in res:
        res["category"] = single(res["category"], f"{path}.category")
    for suffix in _PERFORMED:
        rename(res, f"occurrence{suffix}", f"performed{suffix}")
    reason_down(res, path)
    for element, code, ref in (
        ("used", "usedCode", "usedReference"),
        ("complication", "complication", "complicationDetail"),
    ):
        concepts, refs = split_codeable_references(
            res.pop(element, None) or [], f"{path}.{element}"
        )
        if concepts:
            res[code] = concepts
        if refs:
            res[ref] = refs


# -- Observation, DiagnosticReport ----------------------------------------------------------


def observation_up(res: Json, path: str) -> None:
    for item in [res, *(res.get("component") or [])]:
        data = item.get("valueSampledData")
        if isinstance(data, dict) and "period" in data:
            data["interval"] = data.pop("period")  # R4: milliseconds between samples
            data["intervalUnit"] = "ms"


def observation_down(res: Json, path: str) -> None:
    for index, item in enumerate([res, *(res.get("component") or [])]):
        data = item.get("valueSampledData")
        if isinstance(data, dict):
            where = f"{path}.component[{index - 1}]" if index else path
            if data.pop("intervalUnit", "ms") != "ms" or "interval" not in data:
                raise Refused("no-equivalent-element", f"{where}.valueSampledData.intervalUnit")
            data["period"] = data.pop("interval")


# ConceptMap-R5-DiagnosticReportStatus-R4: R5 `modified` is narrower than R4 `amended`.
_DR_STATUS_DOWN: Final[dict[str, str | None]] = {"modified": "amended"}


def diagnostic_report_up(res: Json, path: str) -> None:
    rename(res, "imagingStudy", "study")


def diagnostic_report_down(res: Json, path: str) -> None:
    translate_code(res, "status", path, _DR_STATUS_DOWN)
    rename(res, "study", "imagingStudy")


# -- contained only: Medication, Goal ---------------------------------------------------------


def medication_up(res: Json, path: str) -> None:
    rename(res, "manufacturer", "marketingAuthorizationHolder")
    rename(res, "form", "doseForm")
    for item in res.get("ingredient") or []:
        if "itemCodeableConcept" in item:
            item["item"] = {"concept": item.pop("itemCodeableConcept")}
        elif "itemReference" in item:
            item["item"] = {"reference": item.pop("itemReference")}
        rename(item, "strength", "strengthRatio")


def medication_down(res: Json, path: str) -> None:
    rename(res, "marketingAuthorizationHolder", "manufacturer")
    rename(res, "doseForm", "form")
    for index, item in enumerate(res.get("ingredient") or []):
        where = f"{path}.ingredient[{index}].item"
        concepts, refs = split_codeable_references([item.pop("item", {})], where)
        if concepts:
            item["itemCodeableConcept"] = concepts[0]
        if refs:
            item["itemReference"] = refs[0]
        rename(item, "strengthRatio", "strength")
