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
from typing import Final, Literal

from caremesh.connectors.inbox.state import InboxAlert
from caremesh.envelope import MessageId, body_message_id, child_message_id
from caremesh.pathways.alert import CoordinatorAction, action_value, make_action

INBOX_SOURCE: Final = "urn:caremesh:connector:inbox"
"""The CloudEvents `ce_source` of the records the inbox writes."""
ACTION_EVENT_TYPE: Final = "org.caremesh.pathway.action"


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


def audit_event_id(action_id: str) -> MessageId:
    """The id (and `audit.v1` key) of the audit record of an action."""
    return child_message_id(action_id, "audit")
