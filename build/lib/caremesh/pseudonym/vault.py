"""The re-identification vault: study pseudonyms, sealed per-patient records and their index.

caremesh extension (DESIGN §5, §6). The `pseudonymize` method asks a `PseudonymVault` for the
study pseudonym of a patient key: 64 hex characters of HMAC-SHA256(study pseudonym key,
study ‖ 0x1f ‖ patient key), stable for a study and key version, unlinkable across studies.

Re-identification goes the other way, through records on the compacted `keys.patient.v1`,
one per patient, keyed by the patient key (the value is JSON, `VAULT_RECORD_VERSION` 1):

- `dataKey`: a random 256-bit per-patient data key, wrapped with AES-KW (RFC 3394) under the
  vault wrapping key derived from the master key version `kid` (`keys.vault_keys`);
- `sealed`: base64(nonce ‖ AES-256-GCM(data key, {"patient", "pseudonyms": {study: pseudonym}},
  AAD = "caremesh.vault.v1" ‖ 0x1f ‖ patient key)): the pseudonym → identity mapping;
- `tags`: blind lookup tags, HMAC-SHA256(vault index key, study ‖ 0x1f ‖ pseudonym), so the
  one record to decrypt is found without decrypting the others.

Erasure (Art. 17) writes a tombstone for the patient key: the folded `VaultIndex` drops the
record at once (the wrapped data key is gone, so nothing sealed under it can be opened), and
compaction removes the older values from the log. Nothing here logs or raises with a value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any, Final, Protocol

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from caremesh.envelope import KeyId, PatientKey, Pseudonym
from caremesh.pseudonym.keys import VaultKeys
from caremesh.randomness import random_bytes

log = logging.getLogger(__name__)

VAULT_RECORD_VERSION: Final = 1
_AAD_PREFIX: Final = b"caremesh.vault.v1\x1f"
_NONCE_BYTES: Final = 12


class PseudonymVault(Protocol):
    """Issues stable, per-study pseudonyms for patient keys."""

    def pseudonym_for(self, study: str, patient_key: PatientKey) -> Pseudonym:
        """The study pseudonym of a patient (the same on every call)."""
        ...


def study_pseudonym(pseudonym_key: bytes, study: str, patient_key: str) -> Pseudonym:
    """HMAC-SHA256(study pseudonym key, study ‖ 0x1f ‖ patient key) as 64 hex characters."""
    message = study.encode("utf-8") + b"\x1f" + patient_key.encode("utf-8")
    return Pseudonym(hmac.new(pseudonym_key, message, hashlib.sha256).hexdigest())


class InMemoryVault:
    """A vault whose pseudonyms are `study_pseudonym(key, study, patient key)`.

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
            found = study_pseudonym(self._key, study, patient_key)
            self._issued[(study, patient_key)] = found
            self._reverse[(study, found)] = patient_key
        return found

    def patient_for(self, study: str, pseudonym: Pseudonym) -> PatientKey | None:
        """Re-identification: the patient key behind a pseudonym this vault issued."""
        return self._reverse.get((study, pseudonym))


class StudyPseudonyms:
    """Pseudonyms of several studies, each under its own derived pseudonym key (stateless).

    Gives the same pseudonyms as one `InMemoryVault(study pseudonym key)` per study; the
    reverse mapping lives in sealed vault records (`seal_record`), not in this object.
    """

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._keys = dict(keys)

    def __repr__(self) -> str:
        return f"StudyPseudonyms(studies={len(self._keys)})"

    def pseudonym_for(self, study: str, patient_key: PatientKey) -> Pseudonym:
        """The study pseudonym of a patient key; unknown studies are a programming error."""
        return study_pseudonym(self._keys[study], study, patient_key)


def lookup_tag(keys: VaultKeys, study: str, pseudonym: str) -> str:
    """The blind index tag of a (study, pseudonym) pair."""
    message = study.encode("utf-8") + b"\x1f" + pseudonym.encode("utf-8")
    return hmac.new(keys.index_key, message, hashlib.sha256).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def seal_record(
    keys: VaultKeys,
    patient_key: PatientKey,
    pseudonyms: Mapping[str, Pseudonym],
    data_key: bytes | None = None,
) -> bytes:
    """The `keys.patient.v1` value of a patient: wrapped data key, sealed mapping, lookup tags.

    A fresh random data key is drawn unless one is given (32 bytes).
    """
    dek = data_key if data_key is not None else random_bytes(32)
    nonce = random_bytes(_NONCE_BYTES)
    plain = orjson.dumps({"patient": patient_key, "pseudonyms": dict(sorted(pseudonyms.items()))})
    sealed = AESGCM(dek).encrypt(nonce, plain, _AAD_PREFIX + patient_key.encode("utf-8"))
    record = {
        "v": VAULT_RECORD_VERSION,
        "kid": keys.key_id,
        "dataKey": _b64(aes_key_wrap(keys.wrapping_key, dek)),
        "tags": sorted(lookup_tag(keys, s, p) for s, p in pseudonyms.items()),
        "sealed": _b64(nonce + sealed),
    }
    return orjson.dumps(record)


def open_record(
    keys: Mapping[KeyId, VaultKeys], patient_key: str, value: bytes
) -> dict[str, Pseudonym] | None:
    """The study → pseudonym mapping sealed in a record, or None when it cannot be opened.

    None covers an unknown key id, a wrong key, a record moved to another patient key and any
    tampering (AES-KW and AES-GCM both authenticate); the reason is logged as a code.
    """
    try:
        record: Any = orjson.loads(value)
        vkeys = keys.get(KeyId(str(record["kid"])))
        if vkeys is None:
            log.warning("vault record not opened: code=unknown-key-id")
            return None
        dek = aes_key_unwrap(vkeys.wrapping_key, base64.b64decode(record["dataKey"]))
        blob = base64.b64decode(record["sealed"])
        aad = _AAD_PREFIX + patient_key.encode("utf-8")
        plain: Any = orjson.loads(
            AESGCM(dek).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad)
        )
        if plain["patient"] != patient_key:
            raise ValueError("patient mismatch")
        return {str(s): Pseudonym(str(p)) for s, p in plain["pseudonyms"].items()}
    except (InvalidUnwrap, InvalidTag):
        log.warning("vault record not opened: code=authentication-failed")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        log.warning("vault record not opened: code=malformed-record")
    return None


def record_data_key(keys: Mapping[KeyId, VaultKeys], value: bytes) -> bytes | None:
    """The unwrapped per-patient data key of a record, or None (unknown key id, tampered, bad).

    AES-KW authenticates the unwrap, so a key that comes out is the one the record was sealed
    with. Used to keep the data key when a record is re-sealed and to encrypt dead letters
    (`caremesh.tables.deadletters`) under the same key, so one tombstone shreds both.
    """
    try:
        record: Any = orjson.loads(value)
        vkeys = keys.get(KeyId(str(record["kid"])))
        if vkeys is None:
            return None
        return aes_key_unwrap(vkeys.wrapping_key, base64.b64decode(record["dataKey"]))
    except InvalidUnwrap:
        log.warning("vault data key not unwrapped: code=authentication-failed")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        log.warning("vault data key not unwrapped: code=malformed-record")
    return None


def record_tags(value: bytes) -> list[str]:
    """The lookup tags of a record (empty when malformed)."""
    try:
        tags: Any = orjson.loads(value)["tags"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return []
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


class VaultIndex:
    """`keys.patient.v1` folded: the latest record per patient key, findable by lookup tag.

    Apply every record of the topic in offset order (a None value is a tombstone), then
    `resolve` (study, pseudonym) to the patient key, or None (never issued, or erased).
    """

    def __init__(self, keys: Mapping[KeyId, VaultKeys]) -> None:
        self._keys = dict(keys)
        self._records: dict[str, bytes] = {}
        self._by_tag: dict[str, str] = {}
        self.erased = 0

    def __repr__(self) -> str:
        return f"VaultIndex(patients={len(self._records)})"

    def __len__(self) -> int:
        return len(self._records)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Fold one record; a tombstone forgets the patient's data key and mapping."""
        if not key:
            return
        patient = key.decode("utf-8", "replace")
        old = self._records.pop(patient, None)
        if old is not None:
            for tag in record_tags(old):
                if self._by_tag.get(tag) == patient:
                    del self._by_tag[tag]
        if value is None:
            self.erased += old is not None
            return
        self._records[patient] = value
        for tag in record_tags(value):
            self._by_tag[tag] = patient

    def record(self, patient: str) -> bytes | None:
        """The patient's current record value, or None (never sealed, or erased)."""
        return self._records.get(patient)

    def records(self) -> list[tuple[str, bytes]]:
        """Every current (patient key, record value) pair."""
        return list(self._records.items())

    def resolve(self, study: str, pseudonym: str) -> PatientKey | None:
        """Re-identification: the patient key behind a study pseudonym, or None."""
        for vkeys in self._keys.values():
            patient = self._by_tag.get(lookup_tag(vkeys, study, pseudonym))
            if patient is None:
                continue
            opened = open_record(self._keys, patient, self._records[patient])
            if opened is not None and opened.get(study) == pseudonym:
                return PatientKey(patient)
        return None
