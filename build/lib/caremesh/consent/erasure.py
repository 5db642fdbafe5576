"""Erasure (GDPR Art. 17): the ledger record types and the retraction reason.

An erasure of a patient is, all in one acknowledged write of the consent API
(`POST /Patient/$erase`):

1. the ledger record `{"caremeshEvent": "erasure", "at": <instant>}` on `consent.events.v1`,
   keyed by the patient key (`consent.parse.erasure_json`). Folded into consent state it leaves
   only the erasure marker, so every later decision for that patient, whatever the purpose or
   recipient, is deny with rule `erased`, forever (`consent.state.apply`, `consent.evaluate`);
2. a tombstone (null value) for the patient key on the compacted `keys.patient.v1`
   (crypto-shredding, DESIGN §5). That topic holds the patient's re-identification vault
   record (`caremesh.pseudonym.vault`): a per-patient AES-256 data key wrapped (AES-KW) under
   a key derived from the master key, and the study → pseudonym mapping sealed with it
   (AES-GCM). Every vault reader drops the record at the tombstone, so the pseudonyms can no
   longer be resolved, and compaction removes the older values from the log. Dead letters of
   the patient-keyed stages are sealed with the same data key (`caremesh.tables.deadletters`), so
   they become unreadable too; ingest dead letters, written before a patient is known, are
   not (docs/operators/gdpr.md);
3. an AuditEvent on `audit.v1` (`caremesh.audit.events.erasure_audit_event`).

The research stage, seeing the erasure on the ledger, sends a retraction with reason `erasure`
(`retraction_reason`) to every study that received the patient's data, and sends nothing more.
"""

from __future__ import annotations

from typing import Final

from caremesh.consent.evaluate import Decision, Rule

REASON_ERASURE: Final = "erasure"
"""Retraction reason when the patient's data was erased (Art. 17)."""
REASON_WITHDRAWN: Final = "consent-withdrawn"
"""Retraction reason when consent for the study's purpose no longer permits."""

ERASURE_EVENT_TYPE: Final = "org.caremesh.consent.erasure"
"""CloudEvents `ce_type` of the erasure ledger record."""
KEY_TOMBSTONE_TYPE: Final = "org.caremesh.keys.patient.tombstone"
"""CloudEvents `ce_type` of the `keys.patient.v1` tombstone."""
VAULT_RECORD_TYPE: Final = "org.caremesh.keys.patient.vault"
"""CloudEvents `ce_type` of a sealed vault record on `keys.patient.v1`."""


def retraction_reason(decision: Decision) -> str:
    """Why a study must delete what it holds: `erasure` or `consent-withdrawn`."""
    return REASON_ERASURE if decision.rule is Rule.ERASED else REASON_WITHDRAWN
