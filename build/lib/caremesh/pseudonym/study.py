"""Per-study anonymizers: the study's derived keys, its key version and its pseudonym vault.

caremesh extension (DESIGN §6): one master key (or keyring) for the platform, independent
keys per study via HKDF (see `keys`), so cryptoHash values, date shifts and pseudonyms of two
studies cannot be linked. The anonymizer it returns reports the key id it used.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from caremesh.envelope import KeyId
from caremesh.pseudonym.engine import Anonymizer
from caremesh.pseudonym.keys import Keyring
from caremesh.pseudonym.ruleset import RuleSet
from caremesh.pseudonym.vault import InMemoryVault, PseudonymVault


def study_anonymizer(
    study: str,
    master_key: bytes | Keyring,
    ruleset: RuleSet,
    *,
    key_id: KeyId | None = None,
    vault: PseudonymVault | None = None,
    parameters: Mapping[str, Any] | None = None,
    today: date | None = None,
) -> Anonymizer:
    """An Anonymizer for one study with keys derived from the master key version `key_id`.

    `key_id` defaults to the keyring's current version (new data); pass an older id to
    reproduce what that version produced. Without a `vault`, an in-memory HMAC vault keyed
    with the study's derived pseudonym key is used. `parameters` override the rule file's
    (never the derived keys).
    """
    ring = master_key if isinstance(master_key, Keyring) else Keyring.single(master_key)
    keys = ring.study_keys(study, key_id)
    return Anonymizer(
        ruleset,
        parameters={**(parameters or {}), **keys.parameters()},
        study=study,
        vault=vault if vault is not None else InMemoryVault(keys.pseudonym_key),
        key_id=keys.key_id,
        today=today,
    )
