"""Consent: the FHIR Consent model (R4 and R5), pure evaluation, per-patient state and audit.

The public surface is re-exported here; see each module for the rules it encodes.
"""

from caremesh.consent.evaluate import ConsentPolicy, Decision, DecisionQuery, Rule, evaluate
from caremesh.consent.model import (
    ActorRef,
    Consent,
    ConsentEvent,
    ConsentStatus,
    ConsentUpserted,
    ConsentWithdrawn,
    FhirRelease,
    Outcome,
    Period,
    Provision,
    ProvisionActor,
    Withdrawal,
)
from caremesh.consent.parse import parse_consent, parse_event, withdrawal_json
from caremesh.consent.purpose import implies
from caremesh.consent.state import PatientConsents, apply

__all__ = [
    "ActorRef",
    "Consent",
    "ConsentEvent",
    "ConsentPolicy",
    "ConsentStatus",
    "ConsentUpserted",
    "ConsentWithdrawn",
    "Decision",
    "DecisionQuery",
    "FhirRelease",
    "Outcome",
    "PatientConsents",
    "Period",
    "Provision",
    "ProvisionActor",
    "Rule",
    "Withdrawal",
    "apply",
    "evaluate",
    "implies",
    "parse_consent",
    "parse_event",
    "withdrawal_json",
]
