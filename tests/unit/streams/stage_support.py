"""Unit-test support for stage handlers: records as plain data and a fixed consent state.

`FixedConsents` is a `ConsentGate` over consents given by the test; its decisions are the real
engine's (`PatientStage.decide`: `caremesh.consent.evaluate` and the real AuditEvent builder)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from caremesh import envelope
from caremesh.consent import ConsentPolicy, Decision, DecisionQuery, parse_consent
from caremesh.consent.model import Consent
from caremesh.kafka.io import Output
from caremesh.metrics import Metrics
from caremesh.settings import Settings
from caremesh.streams.patient_stage import PatientStage
from caremesh.streams.record import Record
from caremesh.topics import CLINICAL_FHIR


class FixedConsents:
    """The consents of each patient, fixed by the test; audited decisions by the real engine."""

    def __init__(self, stage: str, by_patient: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        self.stage = PatientStage(Settings(), stage, Metrics())
        self.by_patient = {p: tuple(parse_consent(c) for c in cs) for p, cs in by_patient.items()}
        self.audits: list[Output] = []

    def consents(self, patient: str) -> tuple[Consent, ...]:
        return self.by_patient.get(patient, ())

    def decide(
        self,
        consents: Sequence[Consent],
        query: DecisionQuery,
        policy: ConsentPolicy,
        audit_id: str,
        now: datetime,
    ) -> tuple[Decision, Output]:
        decision, audit = self.stage.decide(consents, query, policy, audit_id, now)
        self.audits.append(audit)
        return decision, audit


def clinical(
    patient: str, resource: dict[str, Any], *, at: float, partition: int = 0, offset: int = 0
) -> Record:
    """A clinical.fhir.v1 record of `patient` as the runner gives it to a stage."""
    env = envelope.Envelope(
        f"ce-{resource.get('id')}",
        "urn:caremesh:source:hosp-a",
        envelope.fhir_event_type(str(resource["resourceType"])),
    )
    return Record(
        topic=CLINICAL_FHIR,
        key=patient.encode(),
        value=orjson.dumps(resource),
        headers=tuple(env.headers()),
        partition=partition,
        offset=offset,
        time=at,
        resource=resource,
    )
