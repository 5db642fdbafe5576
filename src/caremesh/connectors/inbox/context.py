"""Whether an alert card shows its patient's context: the TREAT consent decision, as share asks it.

Plain data, no Kafka or HTTP. The question is the share stage's (`caremesh.streams.share`):
may the patient's data go to the alert's coordinating organisation for purpose TREAT, now,
for a Patient resource. When consent permits, the card's `context` is the patient table's entry
(`patients`); when it does not, only `{"withheld": "consent"}`, so nothing about the patient
reaches the page; a patient of whom no Patient or CareTeam was read is `{"withheld": "unknown"}`.
Each distinct decision (patient, organisation, outcome, consents) is audited once per process
before the page sees its result (`handlers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from caremesh.connectors.inbox.patients import PatientContext
from caremesh.consent import ActorRef, Consent, ConsentPolicy, Decision, DecisionQuery, evaluate
from caremesh.envelope import PatientKey

PURPOSE: Final = "TREAT"
WITHHELD_CONSENT: Final = {"withheld": "consent"}
WITHHELD_UNKNOWN: Final = {"withheld": "unknown"}
WITHHELD_UNAVAILABLE: Final = {"withheld": "unavailable"}
"""The decision could not be audited, so nothing is shown."""


def treat_query(patient_key: str, organisation: str, now: datetime) -> DecisionQuery:
    """The question: may the coordinating organisation see this patient's details for TREAT?"""
    return DecisionQuery(
        patient=PatientKey(patient_key),
        purpose=PURPOSE,
        now=now,
        actor=ActorRef(reference=f"Organization/{organisation}"),
        resource_type="Patient",
    )


def treat_decision(
    consents: Sequence[Consent],
    patient_key: str,
    organisation: str,
    policy: ConsentPolicy,
    now: datetime,
) -> Decision:
    """The answer to `treat_query` under the patient's consents and the policy."""
    return evaluate(consents, treat_query(patient_key, organisation, now), policy)


def card_context(
    decision: Decision, patient: PatientContext | None, now: datetime
) -> dict[str, Any]:
    """The `context` of an alert card: the patient's details, or why they are withheld."""
    if not decision.permitted:
        return dict(WITHHELD_CONSENT)
    if patient is None:
        return dict(WITHHELD_UNKNOWN)
    return patient.to_json(now.date())
