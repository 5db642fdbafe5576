"""Helpers for the pseudonymisation tests: reference computations written independently."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from caremesh.pseudonym import Anonymizer, load_rules


def hmac_hex(key: str, value: str) -> str:
    """Reference HMAC-SHA256 hex, computed independently of the engine."""
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


def fold_offset(prefix: str, key: str) -> int:
    """Reference resource-scope date-shift offset (DESIGN §6), written out by hand."""
    offset = 0
    for byte in (prefix + key).encode():
        offset = (offset * 131 + byte) % 101
    return offset - 50


def make(rules: list[dict[str, Any]], **parameters: Any) -> Anonymizer:
    """An anonymizer over inline rules, with test keys unless given."""
    params = {"cryptoHashKey": "test-hash-key", "dateShiftKey": "test-shift-key", **parameters}
    version = params.pop("fhirVersion", None)
    errors = params.pop("processingErrors", "raise")
    config: dict[str, Any] = {"fhirPathRules": rules, "processingErrors": errors}
    if version:
        config["fhirVersion"] = version
    return Anonymizer(load_rules(config), parameters=params)
