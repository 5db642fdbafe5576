"""Per-patient consent state: a pure fold of consent.events.v1 records, and its compact form.

`apply(state, event)`:

- an upsert replaces the consent with the same id (the ledger order is authoritative); a
  version with status `entered-in-error` removes the consent and its withdrawals. Withdrawals
  recorded earlier stay attached unless the new version was recorded after them (a re-consent).
- a withdrawal attaches to its consent (`Consent.withdrawals`): from `at` the consent no longer
  applies for that purpose (and every purpose it subsumes), or for every purpose it names, and
  evaluation denies those purposes unless a consent recorded after the withdrawal permits them
  (see `evaluate`). A withdrawal of a consent not (yet) in the state is kept pending and
  attached when the consent arrives.
- an erasure (GDPR Art. 17) removes the patient's consents and pending withdrawals and leaves
  only the erasure marker (`model.erasure_marker`), which `evaluate` answers with deny, rule
  `erased`; every later event of that patient is ignored (an erasure is final).

The state serialises to a JSON-able dict (`to_dict` / `from_dict`) so it can live in a state
table keyed by patient.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from caremesh.consent.codec import (
    STATE_INVALID,
    consent_from_dict,
    consent_to_dict,
    withdrawal_from_list,
    withdrawal_to_list,
)
from caremesh.consent.model import (
    ERASURE_ID,
    Consent,
    ConsentStatus,
    ConsentUpserted,
    ConsentWithdrawn,
    LedgerEvent,
    PatientErased,
    Withdrawal,
    erasure_marker,
)
from caremesh.errors import RejectedInputError

FORMAT_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class PatientConsents:
    """One patient's consents (sorted by id, withdrawals attached) and pending withdrawals."""

    consents: tuple[Consent, ...] = ()
    pending: tuple[tuple[str, Withdrawal], ...] = ()

    def get(self, consent_id: str) -> Consent | None:
        """The current version of one consent, or None."""
        return next((c for c in self.consents if c.id == consent_id), None)

    @property
    def erased(self) -> bool:
        """True once the patient's data was erased (no release, ever)."""
        return any(c.id == ERASURE_ID for c in self.consents)


def _keep_after(withdrawals: tuple[Withdrawal, ...], consent: Consent) -> tuple[Withdrawal, ...]:
    if consent.recorded is None:
        return withdrawals
    recorded = consent.recorded
    return tuple(w for w in withdrawals if w.at > recorded)


def _upsert(state: PatientConsents, consent: Consent) -> PatientConsents:
    others = tuple(c for c in state.consents if c.id != consent.id)
    if consent.status is ConsentStatus.ENTERED_IN_ERROR:
        pending = tuple(p for p in state.pending if p[0] != consent.id)
        return PatientConsents(others, pending)
    earlier = state.get(consent.id)
    carried = earlier.withdrawals if earlier is not None else ()
    carried += tuple(w for cid, w in state.pending if cid == consent.id)
    current = replace(consent, withdrawals=_keep_after(carried, consent))
    pending = tuple(p for p in state.pending if p[0] != consent.id)
    return PatientConsents(tuple(sorted((*others, current), key=lambda c: c.id)), pending)


def _withdraw(state: PatientConsents, event: ConsentWithdrawn) -> PatientConsents:
    withdrawal = Withdrawal(event.at, event.purpose)
    target = state.get(event.consent_id)
    if target is None:
        return PatientConsents(state.consents, (*state.pending, (event.consent_id, withdrawal)))
    updated = replace(target, withdrawals=(*target.withdrawals, withdrawal))
    return PatientConsents(
        tuple(updated if c.id == event.consent_id else c for c in state.consents), state.pending
    )


def apply(state: PatientConsents, event: LedgerEvent) -> PatientConsents:
    """The state after one ledger event (the input state is not changed)."""
    if state.erased:
        return state
    if isinstance(event, PatientErased):
        return PatientConsents((erasure_marker(event.at),), ())
    if isinstance(event, ConsentUpserted):
        return _upsert(state, event.consent)
    return _withdraw(state, event)


def to_dict(state: PatientConsents) -> dict[str, Any]:
    """The JSON-able form of a patient's state."""
    return {
        "v": FORMAT_VERSION,
        "consents": [consent_to_dict(c) for c in state.consents],
        "pending": [[cid, withdrawal_to_list(w)] for cid, w in state.pending],
    }


def from_dict(value: Mapping[str, Any]) -> PatientConsents:
    """Read back `to_dict` (code `consent-state-invalid` when it cannot)."""
    if not isinstance(value, Mapping) or value.get("v") != FORMAT_VERSION:
        raise RejectedInputError(STATE_INVALID, "state: unknown format version")
    try:
        consents = tuple(consent_from_dict(c) for c in value.get("consents", []))
        pending = tuple((str(cid), withdrawal_from_list(w)) for cid, w in value.get("pending", []))
    except (TypeError, ValueError):
        raise RejectedInputError(STATE_INVALID, "state: unreadable") from None
    return PatientConsents(consents, pending)
