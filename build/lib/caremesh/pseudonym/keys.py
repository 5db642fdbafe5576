"""Study keys: HKDF-SHA256 derivation from one master key, key ids and a rotating keyring.

caremesh extension to the anonymizer format (DESIGN §6): every study gets its own hashing,
date-shift, encryption and pseudonym keys, derived with HKDF-SHA256 (RFC 5869) from a master
key version with `info = study name ‖ 0x1f ‖ key purpose`. Keys of two studies are
independent, so their cryptoHash values and pseudonyms cannot be linked. A `Keyring` holds
several master key versions by `KeyId`: the current one is used for new data, older ones stay
available to read what they produced. Key material never appears in a repr or a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from caremesh.envelope import KeyId
from caremesh.errors import ConfigurationError

PURPOSES = ("cryptoHash", "dateShift", "encrypt", "pseudonym")
"""What a derived key is for; part of the HKDF info so that no two uses share a key."""
_SALT = b"caremesh.pseudonym.v1"
DEFAULT_KEY_ID = KeyId("k1")
MIN_MASTER_KEY_BYTES = 32


def derive_key(master_key: bytes, study: str, purpose: str, length: int = 32) -> bytes:
    """HKDF-SHA256(master key, info = study ‖ 0x1f ‖ purpose)."""
    if len(master_key) < MIN_MASTER_KEY_BYTES:
        raise ConfigurationError(f"a master key needs at least {MIN_MASTER_KEY_BYTES} bytes")
    if not study or "\x1f" in study or "\x1f" in purpose:
        raise ConfigurationError("a study name must be non-empty and free of control characters")
    info = study.encode("utf-8") + b"\x1f" + purpose.encode("utf-8")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=info).derive(master_key)


@dataclass(frozen=True, slots=True)
class StudyKeys:
    """The keys of one study under one master key version (hex strings, as the format wants)."""

    study: str
    key_id: KeyId
    crypto_hash_key: str = field(repr=False)
    date_shift_key: str = field(repr=False)
    encrypt_key: str = field(repr=False)
    pseudonym_key: bytes = field(repr=False)

    def parameters(self) -> dict[str, str]:
        """The anonymizer `parameters` these keys fill in."""
        return {
            "cryptoHashKey": self.crypto_hash_key,
            "dateShiftKey": self.date_shift_key,
            "encryptKey": self.encrypt_key,
        }


def study_keys(master_key: bytes, key_id: KeyId, study: str) -> StudyKeys:
    """Derive every key of a study from one master key version.

    The encryption key is 16 random-looking bytes written as 32 hex characters, whose UTF-8
    bytes are the AES-256 key the format expects.
    """
    return StudyKeys(
        study=study,
        key_id=key_id,
        crypto_hash_key=derive_key(master_key, study, "cryptoHash").hex(),
        date_shift_key=derive_key(master_key, study, "dateShift").hex(),
        encrypt_key=derive_key(master_key, study, "encrypt", 16).hex(),
        pseudonym_key=derive_key(master_key, study, "pseudonym"),
    )


@dataclass(frozen=True, slots=True)
class Keyring:
    """Master key versions by id; `current` is used for new data."""

    versions: Mapping[KeyId, bytes] = field(repr=False)
    current: KeyId

    def __post_init__(self) -> None:
        if self.current not in self.versions:
            raise ConfigurationError(f"keyring: current key id {self.current} is not in the ring")
        for key_id, key in self.versions.items():
            if len(key) < MIN_MASTER_KEY_BYTES:
                raise ConfigurationError(
                    f"keyring: key {key_id} needs at least {MIN_MASTER_KEY_BYTES} bytes"
                )

    def key(self, key_id: KeyId | None = None) -> tuple[KeyId, bytes]:
        """A key version (the current one by default); unknown ids are configuration errors."""
        chosen = self.current if key_id is None else key_id
        try:
            return chosen, self.versions[chosen]
        except KeyError:
            raise ConfigurationError(f"keyring: unknown key id {chosen}") from None

    def rotated(self, key_id: KeyId, key: bytes) -> Keyring:
        """A new ring where `key_id` is current and every older version is still known."""
        if key_id in self.versions:
            raise ConfigurationError(f"keyring: key id {key_id} already exists")
        return Keyring({**self.versions, key_id: key}, key_id)

    def study_keys(self, study: str, key_id: KeyId | None = None) -> StudyKeys:
        """The study's keys under a version (current by default)."""
        chosen, master = self.key(key_id)
        return study_keys(master, chosen, study)

    @classmethod
    def single(cls, master_key: bytes, key_id: KeyId = DEFAULT_KEY_ID) -> Keyring:
        """A ring with one version."""
        return cls({key_id: master_key}, key_id)


VAULT_WRAP_PURPOSE = "vaultKeyWrap"
VAULT_INDEX_PURPOSE = "vaultIndex"
_VAULT_SCOPE = "\x1evault"
"""HKDF info scope of the vault's keys; a study id cannot contain 0x1e, so no study shares it."""


@dataclass(frozen=True, slots=True)
class VaultKeys:
    """The re-identification vault's keys under one master key version.

    `wrapping_key` wraps per-patient data keys (AES-KW, RFC 3394); `index_key` makes the blind
    lookup tags of (study, pseudonym) pairs, so that a record can be found without decrypting
    every record, and without the tags telling anything to whoever lacks the master key.
    """

    key_id: KeyId
    wrapping_key: bytes = field(repr=False)
    index_key: bytes = field(repr=False)


def vault_keys(master_key: bytes, key_id: KeyId) -> VaultKeys:
    """Derive the vault's key-wrapping and index keys from a master key version."""
    return VaultKeys(
        key_id=key_id,
        wrapping_key=derive_key(master_key, _VAULT_SCOPE, VAULT_WRAP_PURPOSE),
        index_key=derive_key(master_key, _VAULT_SCOPE, VAULT_INDEX_PURPOSE),
    )


def master_key_bytes(text: str | None) -> bytes:
    """The master key from its configured text: hex-decoded when it is hex, else UTF-8 bytes.

    Raises ConfigurationError (naming the variable, never the value) when missing or short.
    """
    if text is None:
        raise ConfigurationError("CAREMESH_PSEUDONYM__MASTER_KEY is required")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = text.encode()
    if len(raw) < MIN_MASTER_KEY_BYTES:
        raise ConfigurationError("the pseudonymisation master key must be at least 32 bytes")
    return raw
