"""A coordinator's ack or dismiss as records: the action for pathway.actions.v1 and its audit.

The action value is `caremesh.pathways.alert.action_value` (see pathways/SCHEMA.md). The audit
record follows FHIR R4 (4.0.1) AuditEvent like `caremesh.audit.events`: type DICOM 110110
Patient Record, action U (the alert's status changes), outcome 0, purpose TREAT, the
coordinator as the requesting human user (identifier in `INBOX_USER_SYSTEM`), the patient by
its key (allowed on audit.v1, which only auditors read) and the Communication as the domain
object, with the action and pathway as details. The free-text note is never copied into the
audit record; a detail says whether there was one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from caremesh.audit.events import DCM, ENTITY_TYPE, OBJECT_ROLE, PATIENT_KEY_SYSTEM, SOURCE_TYPE
from caremesh.connectors.inbox.state import InboxAlert
from caremesh.consent import purpose as pou
from caremesh.envelope import MessageId, body_message_id, child_message_id
from caremesh.pathways.alert import CoordinatorAction, action_value, make_action

INBOX_SOURCE: Final = "urn:caremesh:connector:inbox"
"""The CloudEvents `ce_source` of the records the inbox writes."""
ACTION_EVENT_TYPE: Final = "org.caremesh.pathway.action"
INBOX_USER_SYSTEM: Final = "urn:caremesh:inbox-user"
OBSERVER: Final = "caremesh-inbox"
_USER_ROLE: Final = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"


def coordinator_action(
    kind: Literal["ack", "dismiss"],
    alert: InboxAlert,
    *,
    coordinator: str,
    note: str | None,
    at: datetime,
) -> CoordinatorAction:
    """The checked action a coordinator takes on an alert of their organisation."""
    return make_action(
        kind,
        alert_id=alert.alert_id,
        pathway_id=alert.pathway_id,
        coordinator=coordinator,
        at=at,
        note=note or None,
        organization=f"Organization/{alert.organisation}",
    )


def action_message_id(action: CoordinatorAction) -> MessageId:
    """The stable `ce_id` of an action record (a hash of its value)."""
    return body_message_id(INBOX_SOURCE, action_value(action))


def action_audit_event(
    action: CoordinatorAction, patient_key: str, *, event_id: str, recorded: datetime
) -> dict[str, Any]:
    """The AuditEvent of a coordinator's action on an alert."""
    coding = {"system": DCM, "code": "110110", "display": "Patient Record"}
    details = [
        {"type": "action", "valueString": action.action},
        {"type": "pathway", "valueString": action.pathway_id},
        {"type": "note", "valueString": "present" if action.note else "absent"},
    ]
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": _USER_ROLE, "code": "humanuser", "display": "human user"}]},
        "who": {"identifier": {"system": INBOX_USER_SYSTEM, "value": action.coordinator}},
        "requestor": True,
        "purposeOfUse": [
            {"coding": [{"system": pou.ACT_REASON_SYSTEM, "code": "TREAT"}]},
        ],
    }
    if action.organization is not None:
        agent["who"]["display"] = action.organization
    return {
        "resourceType": "AuditEvent",
        "id": event_id,
        "type": coding,
        "action": "U",
        "recorded": recorded.isoformat(),
        "outcome": "0",
        "outcomeDesc": f"alert {action.action}",
        "purposeOfEvent": [{"coding": [{"system": pou.ACT_REASON_SYSTEM, "code": "TREAT"}]}],
        "agent": [
            agent,
            {
                "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
                "who": {"display": OBSERVER},
                "requestor": False,
            },
        ],
        "source": {
            "site": "caremesh",
            "observer": {"display": OBSERVER},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": [
            {
                "what": {"identifier": {"system": PATIENT_KEY_SYSTEM, "value": patient_key}},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            },
            {
                "what": {"reference": f"Communication/{action.alert_id}"},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
                "detail": details,
            },
        ],
    }


def audit_event_id(action_id: str) -> MessageId:
    """The id (and `audit.v1` key) of the audit record of an action."""
    return child_message_id(action_id, "audit")
