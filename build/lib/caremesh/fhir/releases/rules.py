"""Which rule converts each type, R4/R4B → R5 (`UP`) and R5 → R4/R4B (`DOWN`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from caremesh.fhir.releases import care, clinical, encounter
from caremesh.fhir.releases.common import Json


def same(res: Json, path: str) -> None:
    """The structures are the same; what the target lacks is found by validation."""


_Rule = Callable[[Json, str], None]

UP: Final[dict[str, _Rule]] = {
    "Patient": same,
    "Encounter": encounter.encounter_up,
    "Observation": clinical.observation_up,
    "Condition": clinical.condition_up,
    "DiagnosticReport": clinical.diagnostic_report_up,
    "MedicationRequest": clinical.medication_request_up,
    "Procedure": clinical.procedure_up,
    "AllergyIntolerance": clinical.allergy_up,
    "CarePlan": care.care_plan_up,
    "CareTeam": care.care_team_up,
    "EpisodeOfCare": care.episode_up,
    "Communication": care.communication_up,
    "Flag": same,
    "Task": care.task_up,
    "Organization": care.organization_up,
    "Practitioner": care.practitioner_up,
    "Medication": clinical.medication_up,
    "Goal": care.goal_up,
    "Location": care.location_up,
    "Provenance": care.provenance_up,
}
"""R4/R4B → R5, one rule per carried type (FML `<Type>4to5`)."""

DOWN: Final[dict[str, _Rule]] = {
    "Patient": same,
    "Encounter": encounter.encounter_down,
    "Observation": clinical.observation_down,
    "Condition": clinical.condition_down,
    "DiagnosticReport": clinical.diagnostic_report_down,
    "MedicationRequest": clinical.medication_request_down,
    "Procedure": clinical.procedure_down,
    "AllergyIntolerance": clinical.allergy_down,
    "CarePlan": care.care_plan_down,
    "CareTeam": care.care_team_down,
    "EpisodeOfCare": care.episode_down,
    "Communication": care.communication_down,
    "Flag": same,
    "Task": care.task_down,
    "Organization": care.organization_down,
    "Practitioner": care.practitioner_down,
    "Medication": clinical.medication_down,
    "Goal": care.goal_down,
    "Location": care.location_down,
    "Provenance": care.provenance_down,
}
"""R5 → R4/R4B, one rule per carried type (FML `<Type>5to4`)."""
