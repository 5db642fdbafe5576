"""Per-patient pathway state and alert candidates: small values with a JSON form for state topics.

One `PatientPathwayState` per (patient, pathway). `to_dict()` gives plain JSON types only
(str, int, float, bool, None, list, dict) and `from_dict()` reads it back, so the stage can keep
the state in a compacted state topic and a restart resumes with identical decisions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from caremesh.envelope import PatientKey

STATE_FORMAT = 1
_ALERT_NAMESPACE = uuid.UUID("0f3e5c1a-8b7d-5d42-9c6e-2a1b4f7e8d90")


def alert_key(rule_id: str, episode: str) -> str:
    """The dedup key of an alert within one patient's pathway state: rule and episode."""
    return f"{rule_id}|{episode}"


def alert_id(patient_key: PatientKey, pathway_id: str, key: str, sequence: int) -> str:
    """The stable alert id: uuid5 of patient, pathway, rule, episode and sequence number."""
    return str(
        uuid.uuid5(_ALERT_NAMESPACE, f"{patient_key}\x1f{pathway_id}\x1f{key}\x1f{sequence}")
    )


@dataclass(slots=True)
class Record:
    """One resource a rule keeps: its reference, clinical time and what the rule needs of it."""

    ref: str
    t: int
    """Clinical time, epoch seconds (Encounter start for readmission)."""
    v: float | None = None
    """The value in the rule's unit (change_over_window)."""
    end: int | None = None
    """Encounter end (readmission)."""
    role: str = ""
    """missing_expected: `trigger` or `expected`."""
    used: bool = False
    """Already part of an alert (raised or deduplicated); alone it raises nothing new."""

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON form."""
        out: dict[str, Any] = {"r": self.ref, "t": self.t}
        if self.v is not None:
            out["v"] = self.v
        if self.end is not None:
            out["e"] = self.end
        if self.role:
            out["o"] = self.role
        if self.used:
            out["u"] = True
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        """Read the compact JSON form back."""
        value = data.get("v")
        return cls(
            ref=str(data["r"]),
            t=int(data["t"]),
            v=float(value) if value is not None else None,
            end=int(data["e"]) if data.get("e") is not None else None,
            role=str(data.get("o", "")),
            used=bool(data.get("u", False)),
        )


@dataclass(slots=True)
class OpenAlert:
    """An alert raised and not yet acknowledged or dismissed."""

    alert_id: str
    rule_id: str
    episode: str
    raised_at: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"id": self.alert_id, "rule": self.rule_id, "ep": self.episode, "at": self.raised_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpenAlert:
        """Read the JSON form back."""
        return cls(str(data["id"]), str(data["rule"]), str(data["ep"]), int(data["at"]))


@dataclass(slots=True)
class PatientPathwayState:
    """What a pathway remembers about one patient."""

    pathway_id: str = ""
    episode: str | None = None
    """Reference of the enrolling resource (EpisodeOfCare/x, Condition/y); None: not enrolled."""
    enrolled_at: int | None = None
    birth_date: str | None = None
    """Kept only when an enrolment criterion has an age."""
    pending: list[tuple[str, int]] = field(default_factory=list)
    """Enrolling resources waiting for the age criterion: (reference, minimum age)."""
    records: dict[str, list[Record]] = field(default_factory=dict)
    """Per rule id, the resources its window needs, sorted by time."""
    open_alerts: dict[str, OpenAlert] = field(default_factory=dict)
    """Per alert key (rule|episode)."""
    sequences: dict[str, int] = field(default_factory=dict)
    """Per alert key, how many alerts were raised; the next alert id uses this number."""

    @property
    def enrolled(self) -> bool:
        """Whether the patient is enrolled in the pathway."""
        return self.episode is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (plain types only)."""
        return {
            "format": STATE_FORMAT,
            "pathway": self.pathway_id,
            "episode": self.episode,
            "enrolled_at": self.enrolled_at,
            "birth_date": self.birth_date,
            "pending": [[ref, age] for ref, age in self.pending],
            "records": {
                rule: [item.to_dict() for item in items] for rule, items in self.records.items()
            },
            "open": {key: item.to_dict() for key, item in self.open_alerts.items()},
            "seq": dict(self.sequences),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PatientPathwayState:
        """Read `to_dict()` output back; None or an empty dict gives an empty state."""
        if not data:
            return cls()
        if data.get("format") != STATE_FORMAT:
            raise ValueError("unsupported pathway state format")
        return cls(
            pathway_id=str(data.get("pathway", "")),
            episode=data.get("episode"),
            enrolled_at=data.get("enrolled_at"),
            birth_date=data.get("birth_date"),
            pending=[(str(ref), int(age)) for ref, age in data.get("pending", [])],
            records={
                str(rule): [Record.from_dict(item) for item in items]
                for rule, items in data.get("records", {}).items()
            },
            open_alerts={
                str(key): OpenAlert.from_dict(item) for key, item in data.get("open", {}).items()
            },
            sequences={str(key): int(n) for key, n in data.get("seq", {}).items()},
        )

    def copy(self) -> PatientPathwayState:
        """A deep copy (the engine never changes the state it was given)."""
        return PatientPathwayState.from_dict(self.to_dict())


@dataclass(frozen=True, slots=True)
class AlertCandidate:
    """An alert the engine decided to raise; `alert.build_communication` turns it into FHIR."""

    alert_id: str
    key: str
    sequence: int
    patient_key: PatientKey
    pathway_id: str
    pathway_version: str
    coordinator: str
    rule_id: str
    kind: str
    severity: str
    title: str
    text: str
    episode: str
    about: tuple[str, ...]
    """References of the resources that triggered the alert, in clinical-time order."""
    occurred_at: int
    """Clinical time of the latest triggering resource (or the missed deadline), epoch seconds."""
    raised_at: int
    """The `now` of the evaluation that raised it, epoch seconds."""
