"""The inbox's patient table: Patient and CareTeam resources of clinical.fhir.v1 folded per patient.

Plain data, no Kafka or HTTP. The record key is the patient key (as on pathway.alerts.v1). From
a FHIR R4 Patient the table keeps the official (else first) name, `gender`, `birthDate` and the
first `telecom` of system `phone`; a later Patient of the same patient replaces what it carries
and keeps the rest. From a CareTeam it keeps the organisations of `participant.member`,
`participant.onBehalfOf` and `managingOrganization` (`Organization/<id>` references), by
CareTeam id, so an updated CareTeam replaces its own members. What the table holds is shown to
a coordinator only when `caremesh.consent.evaluate` permits TREAT for their organisation
(`handlers`); it is never logged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Final

_ORG_REF: Final = re.compile(r"^Organization/([A-Za-z0-9\-_.]{1,64})$")
_BIRTH_DATE: Final = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


@dataclass(frozen=True, slots=True)
class PatientContext:
    """What a coordinator may see of a patient on an alert card."""

    name: str = ""
    sex: str = ""
    """FHIR administrative gender: male, female, other, unknown (or empty)."""
    birth_date: str = ""
    phone: str = ""
    care_teams: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Organisation ids per CareTeam id."""

    def organisations(self) -> list[str]:
        """The care team's organisations, each once, sorted."""
        return sorted({org for orgs in self.care_teams.values() for org in orgs})

    def age(self, today: date) -> int | None:
        """Age in whole years on `today`, when the birth date is a full date."""
        match = _BIRTH_DATE.match(self.birth_date)
        if match is None:
            return None
        try:
            born = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError:
            return None
        return today.year - born.year - ((today.month, today.day) < (born.month, born.day))

    def to_json(self, today: date) -> dict[str, Any]:
        """The card's `context` (JSON)."""
        return {
            "name": self.name,
            "sex": self.sex,
            "age": self.age(today),
            "phone": self.phone,
            "care_team": self.organisations(),
        }


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _name(patient: Mapping[str, Any]) -> str:
    names = [n for n in patient.get("name") or () if isinstance(n, Mapping)]
    chosen = next((n for n in names if n.get("use") == "official"), names[0] if names else None)
    if chosen is None:
        return ""
    text = _text(chosen.get("text"))
    if text:
        return text
    given = " ".join(_text(g) for g in chosen.get("given") or () if _text(g))
    return " ".join(part for part in (given, _text(chosen.get("family"))) if part)


def _phone(patient: Mapping[str, Any]) -> str:
    for telecom in patient.get("telecom") or ():
        if isinstance(telecom, Mapping) and telecom.get("system") == "phone":
            value = _text(telecom.get("value"))
            if value:
                return value
    return ""


def _orgs(care_team: Mapping[str, Any]) -> tuple[str, ...]:
    refs: list[Any] = []
    for participant in care_team.get("participant") or ():
        if isinstance(participant, Mapping):
            refs += [participant.get("member"), participant.get("onBehalfOf")]
    refs += list(care_team.get("managingOrganization") or ())
    found: list[str] = []
    for ref in refs:
        text = ref.get("reference") if isinstance(ref, Mapping) else None
        match = _ORG_REF.match(text) if isinstance(text, str) else None
        if match and match.group(1) not in found:
            found.append(match.group(1))
    return tuple(found)


def fold_patient(current: PatientContext, resource: Mapping[str, Any]) -> PatientContext:
    """The context after one Patient or CareTeam resource (other resources change nothing)."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        return replace(
            current,
            name=_name(resource) or current.name,
            sex=_text(resource.get("gender")) or current.sex,
            birth_date=_text(resource.get("birthDate")) or current.birth_date,
            phone=_phone(resource) or current.phone,
        )
    if rtype == "CareTeam":
        team_id = _text(resource.get("id")) or "-"
        teams = dict(current.care_teams)
        teams[team_id] = _orgs(resource)
        return replace(current, care_teams=teams)
    return current


class PatientTable:
    """The context of every patient seen on clinical.fhir.v1, by patient key."""

    def __init__(self) -> None:
        self._patients: dict[str, PatientContext] = {}

    def __len__(self) -> int:
        return len(self._patients)

    def fold(self, patient_key: str, resource: Mapping[str, Any]) -> None:
        """Fold one Patient or CareTeam of that patient."""
        if resource.get("resourceType") not in ("Patient", "CareTeam"):
            return
        current = self._patients.get(patient_key, PatientContext())
        self._patients[patient_key] = fold_patient(current, resource)

    def get(self, patient_key: str) -> PatientContext | None:
        """The patient's context, or None when no Patient or CareTeam was seen."""
        return self._patients.get(patient_key)
