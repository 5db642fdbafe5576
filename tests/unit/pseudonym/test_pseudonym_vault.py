"""The re-identification vault: sealed per-patient records, blind lookup, crypto-shredding."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from caremesh.envelope import KeyId, PatientKey, Pseudonym
from caremesh.errors import ConfigurationError
from caremesh.pseudonym import InMemoryVault, Keyring
from caremesh.pseudonym.keys import master_key_bytes, vault_keys
from caremesh.pseudonym.vault import StudyPseudonyms, VaultIndex, open_record, seal_record

MASTER = bytes(range(32))
K1 = KeyId("k1")
KEYS = vault_keys(MASTER, K1)
PATIENT = PatientKey("2990175000099")
PSEUDONYMS = {"study-a": Pseudonym("a" * 64), "study-b": Pseudonym("b" * 64)}


def _index(*records: tuple[bytes, bytes | None]) -> VaultIndex:
    index = VaultIndex({K1: KEYS})
    for key, value in records:
        index.apply(key, value)
    return index


def test_a_sealed_record_resolves_each_study_pseudonym_to_its_patient() -> None:
    index = _index((PATIENT.encode(), seal_record(KEYS, PATIENT, PSEUDONYMS)))
    assert index.resolve("study-a", "a" * 64) == PATIENT
    assert index.resolve("study-b", "b" * 64) == PATIENT
    assert index.resolve("study-a", "b" * 64) is None  # a pseudonym is valid in its study only
    assert index.resolve("study-c", "a" * 64) is None


def test_the_record_is_aes_kw_wrapped_key_and_aes_gcm_sealed_mapping_without_plain_values() -> None:
    value = seal_record(KEYS, PATIENT, PSEUDONYMS)
    assert PATIENT.encode() not in value
    assert b"a" * 64 not in value
    assert b"b" * 64 not in value
    record = orjson.loads(value)
    assert (record["v"], record["kid"]) == (1, "k1")
    dek = aes_key_unwrap(KEYS.wrapping_key, base64.b64decode(record["dataKey"]))
    blob = base64.b64decode(record["sealed"])
    plain = AESGCM(dek).decrypt(blob[:12], blob[12:], b"caremesh.vault.v1\x1f" + PATIENT.encode())
    assert orjson.loads(plain) == {"patient": PATIENT, "pseudonyms": PSEUDONYMS}


def test_a_tombstone_shreds_the_patient_and_leaves_others() -> None:
    other = PatientKey("1840275000088")
    index = _index(
        (PATIENT.encode(), seal_record(KEYS, PATIENT, PSEUDONYMS)),
        (other.encode(), seal_record(KEYS, other, {"study-a": Pseudonym("c" * 64)})),
        (PATIENT.encode(), None),
    )
    assert index.resolve("study-a", "a" * 64) is None
    assert index.resolve("study-a", "c" * 64) == other
    assert (len(index), index.erased) == (1, 1)


def test_a_newer_record_replaces_the_older_one() -> None:
    index = _index(
        (PATIENT.encode(), seal_record(KEYS, PATIENT, {"study-a": Pseudonym("a" * 64)})),
        (PATIENT.encode(), seal_record(KEYS, PATIENT, {"study-b": Pseudonym("b" * 64)})),
    )
    assert index.resolve("study-a", "a" * 64) is None
    assert index.resolve("study-b", "b" * 64) == PATIENT


@pytest.mark.parametrize("case", ["other-master", "moved-to-other-key", "tampered", "garbage"])
def test_records_that_cannot_be_authenticated_resolve_to_nothing(case: str) -> None:
    value = seal_record(KEYS, PATIENT, PSEUDONYMS)
    key = PATIENT.encode()
    keys = {K1: KEYS}
    if case == "other-master":
        keys = {K1: vault_keys(b"\x01" * 32, K1)}
    elif case == "moved-to-other-key":
        key = b"1840275000088"
    elif case == "tampered":
        record = orjson.loads(value)
        sealed = bytearray(base64.b64decode(record["sealed"]))
        sealed[-1] ^= 1
        record["sealed"] = base64.b64encode(bytes(sealed)).decode()
        value = orjson.dumps(record)
    else:
        value = b"{not json"
    assert open_record(keys, key.decode(), value) is None
    index = VaultIndex(keys)
    index.apply(key, value)
    assert index.resolve("study-a", "a" * 64) is None


def test_lookup_tags_are_keyed_not_plain_hashes_of_the_pseudonym() -> None:
    record = orjson.loads(seal_record(KEYS, PATIENT, PSEUDONYMS))
    plain = {
        hashlib.sha256(text.encode()).hexdigest()
        for text in ("a" * 64, "study-a\x1f" + "a" * 64, PATIENT)
    }
    assert len(record["tags"]) == 2
    assert plain.isdisjoint(record["tags"])
    other = orjson.loads(seal_record(vault_keys(b"\x02" * 32, K1), PATIENT, PSEUDONYMS))
    assert set(other["tags"]).isdisjoint(record["tags"])


def test_study_pseudonyms_match_the_per_study_in_memory_vault() -> None:
    ring = Keyring.single(MASTER)
    keys = {s: ring.study_keys(s).pseudonym_key for s in ("study-a", "study-b")}
    vault = StudyPseudonyms(keys)
    for study, key in keys.items():
        assert vault.pseudonym_for(study, PATIENT) == InMemoryVault(key).pseudonym_for(
            study, PATIENT
        )
    assert vault.pseudonym_for("study-a", PATIENT) != vault.pseudonym_for("study-b", PATIENT)


def test_vault_key_material_stays_out_of_reprs_and_differs_from_study_keys() -> None:
    text = repr(KEYS) + repr(_index())
    assert KEYS.wrapping_key.hex() not in text
    assert KEYS.index_key.hex() not in text
    study = Keyring.single(MASTER).study_keys("study-a")
    assert KEYS.wrapping_key not in (study.pseudonym_key, bytes.fromhex(study.crypto_hash_key))


def test_master_key_text_is_hex_or_utf8_and_at_least_32_bytes() -> None:
    assert master_key_bytes("00" * 32) == bytes(32)
    assert master_key_bytes("x" * 32) == b"x" * 32
    with pytest.raises(ConfigurationError, match="MASTER_KEY") as missing:
        master_key_bytes(None)
    with pytest.raises(ConfigurationError, match="at least 32 bytes") as short:
        master_key_bytes("short-secret")
    assert "short-secret" not in str(short.value) + str(missing.value)
