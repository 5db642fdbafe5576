"""Pathway alerts as FHIR R4 Communication, and coordinator actions on `pathway.actions.v1`.

The alert follows FHIR R4 (4.0.1) Communication, checked against fhir.resources' R4B models
(Communication is unchanged between R4 and R4B):

- `id` and `identifier` (`urn:ietf:rfc:3986`, `urn:uuid:<alert id>`) carry the stable alert id;
- `status` in-progress, `category` alert (terminology.hl7.org communication-category),
  `priority` from severity (low → routine, medium → urgent, high → asap, critical → stat);
- `subject` a Patient reference by identifier (the INS system for an INS patient key, else
  the caremesh patient-key system), `recipient` the coordinating Organization,
  `about` the triggering resources by reference, `sent` the time the alert was raised;
- `topic.text` the rule title and `payload[0].contentString` the rule text, never patient data;
- `meta.tag` codes for filtering: pathway id, rule id (`<pathway>/<rule>`) and severity;
  an extension carries the dedup episode reference.

A coordinator action is one JSON object (UTF-8, `application/json`), keyed by patient key::

    {"format": 1, "action": "ack" | "dismiss" | "note", "alert_id": "<uuid>",
     "pathway_id": "heart-failure", "coordinator": "<inbox user id>",
     "organization": "Organization/<id>", "at": "2025-01-31T10:00:00Z", "note": "text"}

`ack` and `dismiss` close the alert (a new occurrence may then raise a new one); `note` only
annotates it and needs `note`. `organization` and `note` are optional otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from caremesh.errors import RejectedInputError
from caremesh.fhir.patient_key import INS_SYSTEM
from caremesh.pathways.engine import close_alert
from caremesh.pathways.resource import from_epoch
from caremesh.pathways.state import AlertCandidate, PatientPathwayState

BASE: Final = "https://caremesh.example/fhir"
PATHWAY_TAG_SYSTEM: Final = f"{BASE}/CodeSystem/pathway"
RULE_TAG_SYSTEM: Final = f"{BASE}/CodeSystem/pathway-rule"
SEVERITY_TAG_SYSTEM: Final = f"{BASE}/CodeSystem/alert-severity"
EPISODE_EXTENSION: Final = f"{BASE}/StructureDefinition/pathway-episode"
PATIENT_KEY_SYSTEM: Final = f"{BASE}/sid/patient-key"
CATEGORY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/communication-category"
PRIORITY: Final = {"low": "routine", "medium": "urgent", "high": "asap", "critical": "stat"}


def patient_identifier(patient_key: str) -> dict[str, str]:
    """The Identifier of a patient key: an INS (no `/`) or a source-scoped key."""
    system = PATIENT_KEY_SYSTEM if "/" in patient_key else INS_SYSTEM
    return {"system": system, "value": patient_key}


def build_communication(alert: AlertCandidate) -> dict[str, Any]:
    """The FHIR R4 Communication JSON of an alert, addressed to the coordinating organisation."""
    return {
        "resourceType": "Communication",
        "id": alert.alert_id,
        "meta": {
            "tag": [
                {"system": PATHWAY_TAG_SYSTEM, "code": alert.pathway_id},
                {"system": RULE_TAG_SYSTEM, "code": f"{alert.pathway_id}/{alert.rule_id}"},
                {"system": SEVERITY_TAG_SYSTEM, "code": alert.severity},
            ]
        },
        "extension": [{"url": EPISODE_EXTENSION, "valueReference": {"reference": alert.episode}}],
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{alert.alert_id}"}],
        "status": "in-progress",
        "category": [
            {"coding": [{"system": CATEGORY_SYSTEM, "code": "alert", "display": "Alert"}]}
        ],
        "priority": PRIORITY[alert.severity],
        "subject": {"type": "Patient", "identifier": patient_identifier(alert.patient_key)},
        "topic": {"text": alert.title},
        "about": [{"reference": ref} for ref in alert.about],
        "sent": from_epoch(alert.raised_at),
        "recipient": [{"reference": alert.coordinator}],
        "payload": [{"contentString": alert.text}],
    }


class CoordinatorAction(BaseModel):
    """A coordinator's action on an alert, the value of a `pathway.actions.v1` record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    action: Literal["ack", "dismiss", "note"]
    alert_id: str = Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    pathway_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    coordinator: str = Field(min_length=1, max_length=128)
    organization: str | None = Field(default=None, pattern=r"^Organization/[A-Za-z0-9\-.]{1,64}$")
    at: AwareDatetime
    note: str | None = Field(default=None, max_length=4000)

    @model_validator(mode="after")
    def _check(self) -> CoordinatorAction:
        if self.action == "note" and not self.note:
            raise ValueError("a note action needs a note")
        return self

    @property
    def closes(self) -> bool:
        """Whether the action closes the alert (ack or dismiss)."""
        return self.action in ("ack", "dismiss")


def parse_action(value: bytes | str | Mapping[str, Any]) -> CoordinatorAction:
    """Read a `pathway.actions.v1` value; RejectedInputError(`invalid-action`) names fields only."""
    data: Any = value
    if isinstance(value, bytes | str):
        try:
            data = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            raise RejectedInputError("invalid-action", "value is not JSON") from None
    if not isinstance(data, Mapping):
        raise RejectedInputError("invalid-action", "value is not a JSON object")
    try:
        return CoordinatorAction.model_validate(dict(data))
    except ValidationError as exc:
        fields = "; ".join(
            (".".join(str(part) for part in error["loc"]) or "(root)")
            + ": "
            + (error["msg"] if error["type"] == "value_error" else error["type"])
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise RejectedInputError("invalid-action", fields or "invalid") from None


def action_value(action: CoordinatorAction) -> bytes:
    """The `pathway.actions.v1` value of an action (what `parse_action` reads)."""
    return action.model_dump_json(exclude_none=True).encode()


def make_action(
    action: Literal["ack", "dismiss", "note"],
    *,
    alert_id: str,
    pathway_id: str,
    coordinator: str,
    at: datetime,
    note: str | None = None,
    organization: str | None = None,
) -> CoordinatorAction:
    """A checked action (for the inbox), raising RejectedInputError like `parse_action`."""
    return parse_action(
        {
            "action": action,
            "alert_id": alert_id,
            "pathway_id": pathway_id,
            "coordinator": coordinator,
            "at": at.isoformat(),
            "note": note,
            "organization": organization,
        }
    )


def apply_action(state: PatientPathwayState, action: CoordinatorAction) -> PatientPathwayState:
    """The state after an action: ack and dismiss close the alert; a note changes nothing."""
    return close_alert(state, action.alert_id) if action.closes else state
