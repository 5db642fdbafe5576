"""Rule files in the configuration format of Microsoft's FHIR Tools for Anonymization.

Format (FHIR-Tools-for-Anonymization, "Configuration file format" of its FHIR documentation,
fhirPathRules + parameters, as of the R4/R5 tool 4.x): a JSON object with `fhirVersion`
(optional: R4, R4B, R5), `processingErrors` (`raise` | `skip`; the upstream spelling
`processingError` is accepted), `fhirPathRules` (a list of `{path, method, ...}` tried in file
order) and `parameters`. `load_rules` validates all of it up front and compiles every path,
so a bad rule file fails at start-up with a ConfigurationError, never in the middle of a stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from caremesh.errors import ConfigurationError
from caremesh.fhir.fhirpath import parse_fhirpath
from caremesh.pseudonym.elements import RELEASE_PREFERENCES, preference_for
from caremesh.pseudonym.paths import Union, compile_path

METHODS: dict[str, str] = {
    "keep": "keep",
    "redact": "redact",
    "dateshift": "dateshift",
    "cryptohash": "cryptoHash",
    "encrypt": "encrypt",
    "substitute": "substitute",
    "perturb": "perturb",
    "generalize": "generalize",
    "pseudonymize": "pseudonymize",
}
"""Method names (matched case-insensitively, as upstream) → canonical spelling."""

_METHOD_KEYS: dict[str, frozenset[str]] = {
    "substitute": frozenset({"replaceWith"}),
    "perturb": frozenset({"span", "rangeType", "roundTo"}),
    "generalize": frozenset({"cases", "otherValues"}),
}
_PARAMETER_KEYS = frozenset(
    {
        "dateShiftKey",
        "dateShiftScope",
        "dateShiftFixedOffsetInDays",
        "cryptoHashKey",
        "encryptKey",
        "enablePartialAgesForRedact",
        "enablePartialDatesForRedact",
        "enablePartialZipCodesForRedact",
        "restrictedZipCodeTabulationAreas",
    }
)
_BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte-order mark upstream's rule files begin with (skipped, as .NET's reader does)."""
_TOP_KEYS = frozenset(
    {"fhirVersion", "processingErrors", "processingError", "fhirPathRules", "parameters"}
)


@dataclass(frozen=True, slots=True)
class Parameters:
    """The `parameters` section, validated (keys are secrets: never logged or repr'd)."""

    date_shift_key: str = field(default="", repr=False)
    date_shift_scope: Literal["resource", "patient"] = "resource"
    date_shift_fixed_offset: int | None = None
    crypto_hash_key: str = field(default="", repr=False)
    encrypt_key: str = field(default="", repr=False)
    partial_ages: bool = False
    partial_dates: bool = False
    partial_zip_codes: bool = False
    restricted_zip_codes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    """One fhirPathRule: its path (compiled), canonical method and method settings."""

    index: int
    path: str
    method: str
    selector: Union
    replace_with: Any = None
    span: float = 0.0
    proportional: bool = False
    round_to: int | None = None
    cases: tuple[tuple[str, Any, Any], ...] = ()
    other_values_redact: bool = True


@dataclass(frozen=True, slots=True)
class RuleSet:
    """A validated rule file: rules in file order, parameters, error policy."""

    rules: tuple[Rule, ...]
    parameters: Parameters
    raw_parameters: Mapping[str, Any] = field(repr=False)
    processing_errors: Literal["raise", "skip"] = "raise"
    fhir_version: str | None = None
    _by_type: dict[str, tuple[Rule, ...]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def preference(self) -> tuple[str, ...]:
        """The fhir.resources release lookup order for element types."""
        return preference_for(self.fhir_version)

    def methods(self) -> frozenset[str]:
        """The canonical methods this rule set uses."""
        return frozenset(rule.method for rule in self.rules)

    def missing_keys(self) -> list[str]:
        """The key parameters this rule set's methods need and its file does not carry."""
        p, used = self.parameters, self.methods()
        missing = []
        if "cryptoHash" in used and not p.crypto_hash_key:
            missing.append("cryptoHashKey")
        if "dateshift" in used and not p.date_shift_key and p.date_shift_fixed_offset is None:
            missing.append("dateShiftKey")
        if "encrypt" in used and not p.encrypt_key:
            missing.append("encryptKey")
        return missing

    def carries_keys(self) -> bool:
        """Whether the file's parameters hold key material."""
        p = self.parameters
        return bool(p.crypto_hash_key or p.date_shift_key or p.encrypt_key)

    def rules_for(self, resource_type: str) -> tuple[Rule, ...]:
        """The rules that can apply to a resource type, in file order."""
        found = self._by_type.get(resource_type)
        if found is None:
            found = tuple(
                rule
                for rule in self.rules
                if rule.selector.resource_types is None
                or resource_type in rule.selector.resource_types
            )
            self._by_type[resource_type] = found
        return found


def _fail(where: str, what: str) -> ConfigurationError:
    return ConfigurationError(f"rule file: {where}: {what}")


def _bool(params: Mapping[str, Any], key: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise _fail(f"parameters.{key}", "must be true or false")
    return value


def _text(params: Mapping[str, Any], key: str) -> str:
    value = params.get(key) or ""
    if not isinstance(value, str):
        raise _fail(f"parameters.{key}", "must be a string")
    return value


def parse_parameters(params: Mapping[str, Any]) -> Parameters:
    """Validate a `parameters` object (unknown keys are errors: they are usually typos)."""
    if not isinstance(params, Mapping):
        raise _fail("parameters", "must be an object")
    unknown = sorted(set(params) - _PARAMETER_KEYS)
    if unknown:
        raise _fail("parameters", f"unknown keys {unknown}")
    scope = params.get("dateShiftScope") or "resource"
    if scope in ("file", "folder"):
        raise _fail("parameters.dateShiftScope", f"{scope!r} needs files; use resource or patient")
    if scope not in ("resource", "patient"):
        raise _fail("parameters.dateShiftScope", "must be resource or patient")
    fixed = params.get("dateShiftFixedOffsetInDays")
    if fixed is not None and (isinstance(fixed, bool) or not isinstance(fixed, int)):
        raise _fail("parameters.dateShiftFixedOffsetInDays", "must be an integer")
    zips = params.get("restrictedZipCodeTabulationAreas") or []
    if not isinstance(zips, list) or not all(isinstance(z, str) and z for z in zips):
        raise _fail("parameters.restrictedZipCodeTabulationAreas", "must be a list of strings")
    return Parameters(
        date_shift_key=_text(params, "dateShiftKey"),
        date_shift_scope="patient" if scope == "patient" else "resource",
        date_shift_fixed_offset=fixed,
        crypto_hash_key=_text(params, "cryptoHashKey"),
        encrypt_key=_text(params, "encryptKey"),
        partial_ages=_bool(params, "enablePartialAgesForRedact"),
        partial_dates=_bool(params, "enablePartialDatesForRedact"),
        partial_zip_codes=_bool(params, "enablePartialZipCodesForRedact"),
        restricted_zip_codes=tuple(zips),
    )


def _fhirpath_model(fhir_version: str | None) -> dict[str, Any] | None:
    from fhirpathpy.models import models  # noqa: PLC0415 - loads JSON models, only when needed

    model = models.get("r4" if fhir_version in ("R4", "R4B") else "r5")
    return dict(model) if model else None


def _rule(index: int, raw: Any, model: dict[str, Any] | None) -> Rule:
    where = f"fhirPathRules[{index}]"
    if not isinstance(raw, Mapping):
        raise _fail(where, "must be an object")
    method_name = raw.get("method")
    if not isinstance(method_name, str) or method_name.lower() not in METHODS:
        raise _fail(where, f"method must be one of {sorted(set(METHODS.values()))}")
    method = METHODS[method_name.lower()]
    allowed = {"path", "method"} | _METHOD_KEYS.get(method, frozenset())
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(where, f"unknown keys {unknown} for method {method}")
    path = raw.get("path")
    if not isinstance(path, str):
        raise _fail(where, "path must be a string")
    try:
        selector = compile_path(path, model)
    except ConfigurationError as error:
        raise _fail(where, str(error)) from None
    rule = Rule(index=index, path=path, method=method, selector=selector)
    if method == "substitute":
        return Rule(index, path, method, selector, replace_with=raw.get("replaceWith"))
    if method == "perturb":
        span = raw.get("span")
        if isinstance(span, bool) or not isinstance(span, int | float) or span < 0:
            raise _fail(where, "span must be a non-negative number")
        range_type = raw.get("rangeType", "fixed")
        if range_type not in ("fixed", "proportional"):
            raise _fail(where, "rangeType must be fixed or proportional")
        round_to = raw.get("roundTo")
        if round_to is not None and (
            isinstance(round_to, bool) or not isinstance(round_to, int) or not 0 <= round_to <= 28
        ):
            raise _fail(where, "roundTo must be an integer from 0 to 28")
        return Rule(
            index,
            path,
            method,
            selector,
            span=float(span),
            proportional=range_type == "proportional",
            round_to=round_to,
        )
    if method == "generalize":
        cases = raw.get("cases")
        if not isinstance(cases, Mapping) or not cases:
            raise _fail(where, "cases must be a non-empty object of condition → replacement")
        compiled: list[tuple[str, Any, Any]] = []
        for condition, replacement in cases.items():
            if not isinstance(replacement, str):
                raise _fail(where, "each case replacement must be a FHIRPath string")
            try:
                # select() binds $this to the node (fhirpathpy leaves a bare root $this unset)
                parse_fhirpath(condition)
                parse_fhirpath(replacement)
                compiled.append(
                    (
                        condition,
                        parse_fhirpath(f"select({condition})"),
                        parse_fhirpath(f"select({replacement})"),
                    )
                )
            except ConfigurationError as error:
                raise _fail(where, str(error)) from None
        other = raw.get("otherValues", "redact")
        if other not in ("redact", "keep"):
            raise _fail(where, "otherValues must be redact or keep")
        return Rule(
            index,
            path,
            method,
            selector,
            cases=tuple(compiled),
            other_values_redact=other == "redact",
        )
    return rule


def load_rules(source: str | Path | Mapping[str, Any]) -> RuleSet:
    """Read and validate a rule file (a path, or the already parsed JSON object)."""
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            data = path.read_bytes()
            raw: Any = orjson.loads(data[3:] if data.startswith(_BOM) else data)
        except FileNotFoundError:
            raise ConfigurationError(f"rule file not found: {path}") from None
        except orjson.JSONDecodeError as error:
            raise ConfigurationError(f"rule file {path} is not JSON (at {error.pos})") from None
    else:
        raw = source
    if not isinstance(raw, Mapping):
        raise _fail("top level", "must be a JSON object")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise _fail("top level", f"unknown keys {unknown}")
    version = raw.get("fhirVersion") or None
    if version is not None and version not in RELEASE_PREFERENCES:
        raise _fail("fhirVersion", f"must be one of {sorted(RELEASE_PREFERENCES)} or empty")
    errors = raw.get("processingErrors", raw.get("processingError", "raise"))
    if errors not in ("raise", "skip"):
        raise _fail("processingErrors", "must be raise or skip")
    rules_raw = raw.get("fhirPathRules")
    if not isinstance(rules_raw, list):
        raise _fail("fhirPathRules", "must be a list")
    params_raw = raw.get("parameters") or {}
    parameters = parse_parameters(params_raw)
    needs_model = any(
        isinstance(r, Mapping) and "where(" in str(r.get("path", "")) for r in rules_raw
    )
    model = _fhirpath_model(version) if needs_model else None
    rules = tuple(_rule(i, r, model) for i, r in enumerate(rules_raw))
    return RuleSet(
        rules=rules,
        parameters=parameters,
        raw_parameters=dict(params_raw),
        processing_errors=errors,
        fhir_version=version,
    )
