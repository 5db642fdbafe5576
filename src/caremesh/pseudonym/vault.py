"""The re-identification vault interface and an in-memory, HMAC-based implementation.

caremesh extension (DESIGN §6): the `pseudonymize` method asks a vault for the study
pseudonym of a patient key. The durable vault (encrypted per patient, crypto-shredded on
erasure) implements the same Protocol later; the in-memory one here derives pseudonyms as
HMAC-SHA256(study pseudonym key, patient key) and remembers them so they can be reversed.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

from caremesh.envelope import PatientKey, Pseudonym


class PseudonymVault(Protocol):
    """Issues stable, per-study pseudonyms for patient keys."""

    def pseudonym_for(self, study: str, patient_key: PatientKey) -> Pseudonym:
        """The study pseudonym of a patient (the same on every call)."""
        ...


class InMemoryVault:
    """A vault whose pseudonyms are 64 hex characters of HMAC-SHA256(key, study ‖ patient key).

    Pseudonyms are valid FHIR ids. Once issued, a pseudonym is kept for the life of the
    object (so a later key rotation does not change it) and can be reversed by `patient_for`.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._issued: dict[tuple[str, PatientKey], Pseudonym] = {}
        self._reverse: dict[tuple[str, Pseudonym], PatientKey] = {}

    def __repr__(self) -> str:
        return f"InMemoryVault(issued={len(self._issued)})"

    def pseudonym_for(self, study: str, patient_key: PatientKey) -> Pseudonym:
        """The study pseudonym of a patient key, issued on first use."""
        found = self._issued.get((study, patient_key))
        if found is None:
            message = study.encode("utf-8") + b"\x1f" + patient_key.encode("utf-8")
            found = Pseudonym(hmac.new(self._key, message, hashlib.sha256).hexdigest())
            self._issued[(study, patient_key)] = found
            self._reverse[(study, found)] = patient_key
        return found

    def patient_for(self, study: str, pseudonym: Pseudonym) -> PatientKey | None:
        """Re-identification: the patient key behind a pseudonym this vault issued."""
        return self._reverse.get((study, pseudonym))
