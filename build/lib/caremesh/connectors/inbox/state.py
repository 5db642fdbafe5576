"""The inbox's view of alerts: pathway.alerts.v1 and pathway.actions.v1 folded per alert id.

Plain data, no Kafka or HTTP. An alert is read from the FHIR R4 Communication that
`caremesh.pathways.alert.build_communication` writes (id, `meta.tag` pathway / rule /
severity, `topic.text`, `payload[0].contentString`, `sent`, `recipient` Organization); the
record key is the patient key. The same alert id arriving again is kept once. An `ack` or
`dismiss` action closes the alert (the first closing action wins); an action read before its
alert is held and applied when the alert arrives, so the fold's result does not depend on how
the two topics interleave.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from caremesh.errors import RejectedInputError
from caremesh.pathways.alert import (
    PATHWAY_TAG_SYSTEM,
    RULE_TAG_SYSTEM,
    SEVERITY_TAG_SYSTEM,
    CoordinatorAction,
)

SEVERITIES: Final = ("low", "medium", "high", "critical")
Status = Literal["open", "closed"]
_ALERT_ID: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ORG_REF: Final = re.compile(r"^Organization/([A-Za-z0-9\-_.]{1,64})$")


@dataclass(frozen=True, slots=True)
class Closure:
    """How an alert was closed: by whom, when, with what note."""

    action: str
    coordinator: str
    at: str
    note: str | None


@dataclass(frozen=True, slots=True)
class InboxAlert:
    """One alert as the inbox shows it."""

    alert_id: str
    patient_key: str
    organisation: str
    """The recipient organisation id (the `<id>` of `Organization/<id>`)."""
    pathway_id: str
    rule_id: str
    severity: str
    title: str
    text: str
    sent: str
    closure: Closure | None = None

    @property
    def status(self) -> Status:
        """`open` until an ack or dismiss closed it."""
        return "open" if self.closure is None else "closed"

    def to_json(self) -> dict[str, Any]:
        """The JSON the API and the event stream send (to the recipient organisation only)."""
        out: dict[str, Any] = {
            "id": self.alert_id,
            "pathway": self.pathway_id,
            "rule": self.rule_id,
            "title": self.title,
            "text": self.text,
            "severity": self.severity,
            "sent": self.sent,
            "status": self.status,
            "patient": self.patient_key,
        }
        if self.closure is not None:
            out["closed"] = {
                "action": self.closure.action,
                "by": self.closure.coordinator,
                "at": self.closure.at,
                "note": self.closure.note,
            }
        return out


def _tag(communication: Mapping[str, Any], system: str) -> str | None:
    meta = communication.get("meta")
    tags = meta.get("tag") if isinstance(meta, Mapping) else None
    for tag in tags if isinstance(tags, list) else ():
        if isinstance(tag, Mapping) and tag.get("system") == system:
            code = tag.get("code")
            return code if isinstance(code, str) and code else None
    return None


def _recipient_org(communication: Mapping[str, Any]) -> str | None:
    recipients = communication.get("recipient")
    for recipient in recipients if isinstance(recipients, list) else ():
        ref = recipient.get("reference") if isinstance(recipient, Mapping) else None
        match = _ORG_REF.match(ref) if isinstance(ref, str) else None
        if match:
            return match.group(1)
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def read_alert(patient_key: str | None, communication: Any) -> InboxAlert:
    """An InboxAlert from a pathway.alerts.v1 record; RejectedInputError(`invalid-alert`)."""
    if not isinstance(communication, Mapping) or communication.get("resourceType") != (
        "Communication"
    ):
        raise RejectedInputError("invalid-alert", "value is not a Communication")
    alert_id = communication.get("id")
    if not isinstance(alert_id, str) or not _ALERT_ID.match(alert_id):
        raise RejectedInputError("invalid-alert", "Communication.id is not an alert id")
    if not patient_key:
        raise RejectedInputError("invalid-alert", "record has no patient key")
    org = _recipient_org(communication)
    if org is None:
        raise RejectedInputError("invalid-alert", "Communication.recipient has no Organization")
    pathway = _tag(communication, PATHWAY_TAG_SYSTEM)
    severity = _tag(communication, SEVERITY_TAG_SYSTEM)
    if pathway is None or severity not in SEVERITIES:
        raise RejectedInputError("invalid-alert", "Communication.meta.tag lacks pathway/severity")
    rule = _tag(communication, RULE_TAG_SYSTEM) or ""
    topic = communication.get("topic")
    payload = communication.get("payload")
    first = payload[0] if isinstance(payload, list) and payload else {}
    return InboxAlert(
        alert_id=alert_id,
        patient_key=patient_key,
        organisation=org,
        pathway_id=pathway,
        rule_id=rule.split("/", 1)[1] if "/" in rule else rule,
        severity=severity,
        title=_text(topic.get("text")) if isinstance(topic, Mapping) else "",
        text=_text(first.get("contentString")) if isinstance(first, Mapping) else "",
        sent=_text(communication.get("sent")),
    )


def _closure(action: CoordinatorAction) -> Closure:
    return Closure(action.action, action.coordinator, action.at.isoformat(), action.note)


class InboxState:
    """All alerts the inbox knows, by id, with their open/closed status."""

    def __init__(self) -> None:
        self._alerts: dict[str, InboxAlert] = {}
        self._early: dict[str, Closure] = {}

    def __len__(self) -> int:
        return len(self._alerts)

    def add_alert(self, alert: InboxAlert) -> InboxAlert | None:
        """Keep a new alert; returns it, or None when that id is already known (a duplicate)."""
        if alert.alert_id in self._alerts:
            return None
        early = self._early.pop(alert.alert_id, None)
        if early is not None:
            alert = replace(alert, closure=early)
        self._alerts[alert.alert_id] = alert
        return alert

    def apply_action(self, action: CoordinatorAction) -> InboxAlert | None:
        """Fold one action; returns the alert when it changed (it was open and is now closed)."""
        if not action.closes:
            return None
        current = self._alerts.get(action.alert_id)
        if current is None:
            self._early.setdefault(action.alert_id, _closure(action))
            return None
        if current.closure is not None:
            return None
        closed = replace(current, closure=_closure(action))
        self._alerts[action.alert_id] = closed
        return closed

    def get(self, alert_id: str, organisation: str) -> InboxAlert | None:
        """The alert with that id if it is addressed to `organisation`, else None."""
        alert = self._alerts.get(alert_id)
        return alert if alert is not None and alert.organisation == organisation else None

    def select(
        self,
        organisation: str,
        *,
        pathway: str | None = None,
        severity: str | None = None,
        status: Status | None = None,
    ) -> list[InboxAlert]:
        """The organisation's alerts matching the filters, newest first."""
        found = [
            a
            for a in self._alerts.values()
            if a.organisation == organisation
            and (pathway is None or a.pathway_id == pathway)
            and (severity is None or a.severity == severity)
            and (status is None or a.status == status)
        ]
        found.sort(key=lambda a: (a.sent, a.alert_id), reverse=True)
        return found

    def pathways(self, organisation: str) -> list[str]:
        """The pathway ids among the organisation's alerts (for the filter)."""
        return sorted(
            {a.pathway_id for a in self._alerts.values() if a.organisation == organisation}
        )
