"""The anonymizer methods on primitive values, with their keys, memos and per-call state.

Each method takes (rule, value, element, parent type, run state), returns the new value (None
removes it) and records in `run.flags` which security label it earned. Errors are
`methods.TransformError` codes, never values.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import date
from typing import Any

import orjson
from fhirpathpy.engine.nodes import FP_Type

from caremesh.envelope import PatientKey, Pseudonym
from caremesh.pseudonym import methods as m
from caremesh.pseudonym.elements import ElementInfo
from caremesh.pseudonym.output import (
    ABSTRED,
    CRYTOHASH,
    GENERALIZED,
    MASKED,
    PERTURBED,
    PSEUDED,
    REDACTED,
    SUBSTITUTED,
)
from caremesh.pseudonym.paths import fhirpath_eval
from caremesh.pseudonym.ruleset import Parameters, Rule
from caremesh.pseudonym.vault import PseudonymVault

PSEUDONYM_SYSTEM = "urn:caremesh:study:{study}:pseudonym"
"""Identifier.system of the study pseudonym that `pseudonymize` puts on a Patient."""


_MEMO_SIZE = 4096


class RunState:
    """State of one `apply` call."""

    __slots__ = ("flags", "id_final", "id_input", "id_rank", "patient_key", "pseudonym", "today")

    def __init__(self, patient_key: str | None, today: date) -> None:
        self.patient_key = patient_key
        self.today = today
        self.flags = 0
        self.pseudonym: Pseudonym | None = None
        self.id_input = ""
        self.id_final = ""
        self.id_rank = 1 << 30


def _is_reference_string(info: ElementInfo, parent: str) -> bool:
    """Whether a node names a resource as a reference does: `Reference.reference`,
    `Bundle.entry.fullUrl` (the only element of that name), or a Bundle entry's
    `request.url` / `response.location` (uri elements of a backbone element); their id part is
    transformed like a reference's, so that references still resolve to their entries."""
    if info.name == "reference":
        return parent == "Reference"
    if info.fhir_type != "uri":
        return False
    return info.name == "fullUrl" or (info.name in _ENTRY_URLS and parent == "BackboneElement")


_ENTRY_URLS = frozenset({"url", "location"})
_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]+$")
"""A bare resource type (a transaction's `request.url` for a create): nothing to transform."""


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _fhirpath_json(result: list[Any]) -> Any:
    if not result:
        return None
    value = result[0]
    if isinstance(value, FP_Type) or not isinstance(value, bool | int | float | str):
        text = getattr(value, "asStr", None)  # a date-time as written (`Z` stays `Z`)
        return text if isinstance(text, str) else str(value)
    return value


Method = Callable[[Rule, Any, ElementInfo, str, RunState], Any]


class ValueMethods:
    """The methods of one Anonymizer, with its keys; `table` maps method names to them."""

    def __init__(
        self,
        params: Parameters,
        *,
        study: str | None,
        vault: PseudonymVault | None,
        rng: random.Random | None,
        encrypts: bool,
    ) -> None:
        self.params = params
        self.study = study
        self._vault = vault
        self._rng = rng or random.SystemRandom()
        self._hash = m.hasher(params.crypto_hash_key)
        self._encrypt = m.encrypter(params.encrypt_key) if encrypts else None
        self._patient_offsets: dict[str, int] = {}
        self._resource_offsets: dict[str, int] = {}
        # Bounded memos of deterministic results (hashes, generalisations): values repeat a lot
        # in a stream (references to the same patient, the same postal codes and dates). In memory
        # only.
        self._hash_memo: dict[str, str] = {}
        self._general_memo: dict[tuple[int, str, Any], Any] = {}
        self._shift_memo: dict[tuple[str, int, date], tuple[str | None, bool]] = {}
        self._reference_memo: dict[tuple[str, str], str] = {}
        self.table: dict[str, Method] = {
            "keep": lambda rule, value, info, parent, run: value,
            "redact": self._redact,
            "dateshift": self._dateshift,
            "cryptoHash": self._cryptohash,
            "encrypt": self._encrypt_value,
            "perturb": self._perturb,
            "generalize": self._generalize,
            "pseudonymize": self._pseudonymize,
            "substitute": self._substitute_primitive,
        }

    def _redact(self, rule: Rule, value: Any, info: ElementInfo, parent: str, run: RunState) -> Any:
        p, ftype = self.params, info.fhir_type
        if info.name == "postalCode" and p.partial_zip_codes and isinstance(value, str):
            run.flags |= ABSTRED
            return m.redact_postal_code(value, p.restricted_zip_codes)
        run.flags |= REDACTED
        if ftype in m.DATE_TYPES and isinstance(value, str):
            return m.redact_date(value, p.partial_dates, run.today)
        if info.name == "value" and parent == "Age":
            return m.redact_age(value, p.partial_ages)
        return None

    def _offset(self, rule: Rule, run: RunState) -> int:
        p = self.params
        if p.date_shift_fixed_offset is not None:
            return p.date_shift_fixed_offset
        if p.date_shift_scope == "patient":
            key = run.patient_key or ""
            found = self._patient_offsets.get(key)
            if found is None:
                found = m.patient_scope_offset(key, p.date_shift_key)
                if len(self._patient_offsets) < 65536:
                    self._patient_offsets[key] = found
            return found
        prefix = run.id_final if run.id_rank < rule.index else run.id_input
        found = self._resource_offsets.get(prefix)
        if found is None:
            found = m.resource_scope_offset(prefix, p.date_shift_key)
            if len(self._resource_offsets) < 65536:
                self._resource_offsets[prefix] = found
        return found

    def _dateshift(
        self, rule: Rule, value: Any, info: ElementInfo, parent: str, run: RunState
    ) -> Any:
        if info.fhir_type not in m.DATE_TYPES or not isinstance(value, str):
            return value
        offset = self._offset(rule, run)
        key = (value, offset, run.today)
        memo = self._shift_memo
        found = memo.get(key)
        if found is None:
            found = m.shift_date(value, offset, self.params.partial_dates, run.today)
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[key] = found
        shifted, moved = found
        run.flags |= PERTURBED if moved else REDACTED
        return shifted

    def _cryptohash(
        self, rule: Rule, value: Any, info: ElementInfo, parent: str, run: RunState
    ) -> Any:
        run.flags |= CRYTOHASH
        text = value if type(value) is str else _json_text(value)
        memo = self._hash_memo
        is_reference = _is_reference_string(info, parent)
        key = "R" + text if is_reference else "V" + text
        found = memo.get(key)
        if found is None:
            if is_reference and _RESOURCE_TYPE.match(text):
                found = text
            elif is_reference:
                found = m.transform_reference(text, self._hash)
            else:
                found = self._hash(text)
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[key] = found
        return found

    def _encrypt_value(
        self, rule: Rule, value: Any, info: ElementInfo, parent: str, run: RunState
    ) -> Any:
        assert self._encrypt is not None
        run.flags |= MASKED
        return self._encrypt(_json_text(value))

    def perturb_number(self, rule: Rule, value: Any, round_to: int, info: ElementInfo) -> Any:
        def noise(half: float) -> float:
            return self._rng.uniform(-half, half)

        return m.perturb_number(value, rule.span, rule.proportional, round_to, noise)

    def _perturb(
        self, rule: Rule, value: Any, info: ElementInfo, parent: str, run: RunState
    ) -> Any:
        ftype = info.fhir_type
        if ftype not in m.NUMERIC_TYPES:
            return value
        round_to = 0 if ftype in m.INTEGER_TYPES else 2 if rule.round_to is None else rule.round_to
        new = self.perturb_number(rule, value, round_to, info)
        if ftype == "positiveInt" and new <= 0:
            new = 1
        elif ftype == "unsignedInt" and new < 0:
            new = 0
        run.flags |= PERTURBED
        return new

    def _generalize(
        self, rule: Rule, value: Any, info: ElementInfo, parent: str, run: RunState
    ) -> Any:
        run.flags |= GENERALIZED
        ftype = info.fhir_type
        key = (rule.index, ftype, value)
        memo = self._general_memo
        if key in memo:
            return memo[key]
        result = None if rule.other_values_redact else value
        try:
            for _text, condition, replacement in rule.cases:
                if fhirpath_eval(value, ftype, condition) == [True]:
                    result = _fhirpath_json(fhirpath_eval(value, ftype, replacement))
                    break
        except Exception:  # noqa: BLE001 - fhirpathpy errors are untyped and may quote data
            raise m.TransformError("generalize-failed") from None
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[key] = result
        return result

    def pseudonym(self, run: RunState) -> Pseudonym:
        if run.pseudonym is None:
            assert self._vault is not None
            assert self.study is not None
            assert run.patient_key is not None
            run.pseudonym = self._vault.pseudonym_for(self.study, PatientKey(run.patient_key))
        return run.pseudonym

    def _pseudonymize(
        self, rule: Rule, value: Any, info: ElementInfo, parent: str, run: RunState
    ) -> Any:
        pseudonym = self.pseudonym(run)
        run.flags |= PSEUDED
        if _is_reference_string(info, parent):
            text = _json_text(value)
            key = (text, pseudonym)
            memo = self._reference_memo
            found = memo.get(key)
            if found is None:
                found = m.transform_reference(text, lambda _id: pseudonym)
                if len(memo) >= _MEMO_SIZE:
                    memo.clear()
                memo[key] = found
            return found
        return pseudonym

    def _substitute_primitive(
        self, rule: Rule, value: Any, info: ElementInfo, parent: str, run: RunState
    ) -> Any:
        if isinstance(rule.replace_with, dict | list):
            raise m.TransformError("substitute-type-mismatch")
        run.flags |= SUBSTITUTED
        return rule.replace_with
