"""CarePlan (and its contained Goal), CareTeam, EpisodeOfCare, Communication, Task, Organization,
Practitioner between R4 and R5 (FML `<Type>4to5` / `<Type>5to4`)."""

from __future__ import annotations

from typing import Any, Final

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
)

# -- CarePlan, CareTeam, EpisodeOfCare --------------------------------------------------------


def care_plan_up(res: Json, path: str) -> None:
    rename(res, "author", "custodian")
    if "addresses" in res:
        res["addresses"] = as_references(res["addresses"])
    for index, activity in enumerate(res.get("activity") or []):
        where = f"{path}.activity[{index}]"
        if "detail" in activity:
            raise Refused("no-equivalent-element", f"{where}.detail")
        performed = as_concepts(activity.pop("outcomeCodeableConcept", None) or []) + as_references(
            activity.pop("outcomeReference", None) or []
        )
        if performed:
            activity["performedActivity"] = performed
        rename(activity, "reference", "plannedActivityReference")


def care_plan_down(res: Json, path: str) -> None:
    rename(res, "custodian", "author")
    if "addresses" in res:
        concepts, refs = split_codeable_references(res["addresses"], f"{path}.addresses")
        if concepts:
            raise Refused("no-equivalent-element", f"{path}.addresses")
        res["addresses"] = refs
    for index, activity in enumerate(res.get("activity") or []):
        where = f"{path}.activity[{index}]"
        concepts, refs = split_codeable_references(
            activity.pop("performedActivity", None) or [], f"{where}.performedActivity"
        )
        if concepts:
            activity["outcomeCodeableConcept"] = concepts
        if refs:
            activity["outcomeReference"] = refs
        rename(activity, "plannedActivityReference", "reference")


def care_team_up(res: Json, path: str) -> None:
    if "encounter" in res:
        raise Refused("no-equivalent-element", f"{path}.encounter")
    for index, part in enumerate(res.get("participant") or []):
        if "role" in part:
            part["role"] = single(part["role"], f"{path}.participant[{index}].role")
        rename(part, "period", "coveragePeriod")
    reason_up(res, path)


def care_team_down(res: Json, path: str) -> None:
    for part in res.get("participant") or []:
        if "role" in part:
            part["role"] = [part["role"]]
        rename(part, "coveragePeriod", "period")
    reason_down(res, path)


def episode_up(res: Json, path: str) -> None:
    for index, diag in enumerate(res.get("diagnosis") or []):
        if "rank" in diag:
            raise Refused("no-equivalent-element", f"{path}.diagnosis[{index}].rank")
        if "condition" in diag:
            diag["condition"] = [{"reference": diag["condition"]}]
        rename(diag, "role", "use")
    rename(res, "team", "careTeam")


def episode_down(res: Json, path: str) -> None:
    diagnoses: list[Json] = []
    for index, diag in enumerate(res.pop("diagnosis", None) or []):
        where = f"{path}.diagnosis[{index}]"
        concepts, refs = split_codeable_references(diag.get("condition") or [], where)
        if concepts:
            raise Refused("no-equivalent-element", f"{where}.condition")
        for ref in refs:
            item = {k: v for k, v in diag.items() if k not in ("condition", "use")}
            item["condition"] = ref
            if "use" in diag:
                item["role"] = diag["use"]
            diagnoses.append(item)
    if diagnoses:
        res["diagnosis"] = diagnoses
    rename(res, "careTeam", "team")


# -- Communication, Task ----------------------------------------------------------------------


def communication_up(res: Json, path: str) -> None:
    reason_up(res, path)
    for index, payload in enumerate(res.get("payload") or []):
        if "contentString" in payload:
            text = take_primitive(payload, "contentString", f"{path}.payload[{index}]")
            payload["contentCodeableConcept"] = {"text": text}


def communication_down(res: Json, path: str) -> None:
    reason_down(res, path)
    for index, payload in enumerate(res.get("payload") or []):
        concept = payload.pop("contentCodeableConcept", None)
        if concept is not None:
            if set(concept) != {"text"}:
                raise Refused(
                    "no-equivalent-element", f"{path}.payload[{index}].contentCodeableConcept"
                )
            payload["contentString"] = concept["text"]


_TASK_CODE: Final = "http://hl7.org/fhir/CodeSystem/task-code"


def _seeks_fulfillment(task: Json) -> bool:
    """R5 tsk-1: a restriction needs a focus and the code `fulfill`."""
    codings = (task.get("code") or {}).get("coding") or []
    fulfill = any(c.get("system") == _TASK_CODE and c.get("code") == "fulfill" for c in codings)
    return fulfill and "focus" in task


def task_up(res: Json, path: str) -> None:
    if "restriction" in res and not _seeks_fulfillment(res):  # R5 invariant tsk-1
        raise Refused("no-equivalent-element", f"{path}.restriction")
    reason = as_concepts([res.pop("reasonCode")] if "reasonCode" in res else []) + as_references(
        [res.pop("reasonReference")] if "reasonReference" in res else []
    )
    if reason:
        res["reason"] = reason
    if "performerType" in res:
        res["requestedPerformer"] = as_concepts(res.pop("performerType"))
    if "statusReason" in res:
        res["statusReason"] = {"concept": res["statusReason"]}


def task_down(res: Json, path: str) -> None:
    reason = single(res.pop("reason", None), f"{path}.reason")
    if reason is not None:
        concepts, refs = split_codeable_references([reason], f"{path}.reason")
        if concepts:
            res["reasonCode"] = concepts[0]
        if refs:
            res["reasonReference"] = refs[0]
    if "requestedPerformer" in res:
        concepts, refs = split_codeable_references(
            res.pop("requestedPerformer"), f"{path}.requestedPerformer"
        )
        if refs:
            raise Refused("no-equivalent-element", f"{path}.requestedPerformer")
        res["performerType"] = concepts
    if "statusReason" in res:
        concepts, refs = split_codeable_references([res["statusReason"]], f"{path}.statusReason")
        if refs:
            raise Refused("no-equivalent-element", f"{path}.statusReason")
        res["statusReason"] = concepts[0]


# -- Organization, Practitioner ---------------------------------------------------------------


def organization_up(res: Json, path: str) -> None:
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


def organization_down(res: Json, path: str) -> None:
    contacts: list[Json] = []
    for index, contact in enumerate(res.pop("contact", None) or []):
        if set(contact) <= {"telecom", "address"}:
            if contact.get("telecom"):
                res.setdefault("telecom", []).extend(contact["telecom"])
            if "address" in contact:
                res.setdefault("address", []).append(contact["address"])
            continue
        if "name" in contact:
            contact["name"] = single(contact["name"], f"{path}.contact[{index}].name")
        contacts.append(contact)
    if contacts:
        res["contact"] = contacts


def practitioner_up(res: Json, path: str) -> None:
    if "communication" in res:
        res["communication"] = [{"language": c} for c in res["communication"]]


def practitioner_down(res: Json, path: str) -> None:
    languages: list[Any] = []
    for index, item in enumerate(res.pop("communication", None) or []):
        if set(item) - {"language"}:
            raise Refused("no-equivalent-element", f"{path}.communication[{index}].preferred")
        languages.append(item["language"])
    if languages:
        res["communication"] = languages


def goal_up(res: Json, path: str) -> None:
    rename(res, "expressedBy", "source")
    outcome = as_concepts(res.pop("outcomeCode", None) or []) + as_references(
        res.pop("outcomeReference", None) or []
    )
    if outcome:
        res["outcome"] = outcome


def goal_down(res: Json, path: str) -> None:
    rename(res, "source", "expressedBy")
    concepts, refs = split_codeable_references(res.pop("outcome", None) or [], f"{path}.outcome")
    if concepts:
        res["outcomeCode"] = concepts
    if refs:
        res["outcomeReference"] = refs


def location_up(res: Json, path: str) -> None:
    rename(res, "physicalType", "form")
    telecom = res.pop("telecom", None)
    if telecom:
        res["contact"] = [{"telecom": telecom}]


def location_down(res: Json, path: str) -> None:
    rename(res, "form", "physicalType")
    contacts = res.pop("contact", None) or []
    for index, contact in enumerate(contacts):
        if set(contact) - {"telecom"}:
            raise Refused("no-equivalent-element", f"{path}.contact[{index}]")
        res.setdefault("telecom", []).extend(contact.get("telecom") or [])


def provenance_up(res: Json, path: str) -> None:
    reasons = res.pop("reason", None) or []
    if reasons:
        res["authorization"] = as_concepts(reasons)


def provenance_down(res: Json, path: str) -> None:
    concepts, refs = split_codeable_references(
        res.pop("authorization", None) or [], f"{path}.authorization"
    )
    if refs:
        raise Refused("no-equivalent-element", f"{path}.authorization")
    if concepts:
        res["reason"] = concepts
