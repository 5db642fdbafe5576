"""Pathway definitions: the YAML schema as pydantic models, and loading it with clear errors.

A pathway file is one YAML mapping (the full reference is `SCHEMA.md` next to this module)::

    id: heart-failure                      # slug, unique among loaded pathways
    title: Heart failure
    version: "1.0.0"
    coordinator: Organization/care-coord   # who receives alerts; configuration may override it
    out_of_order_tolerance: 24h            # optional, default 24h
    enrolment:                             # any one criterion enrols the patient
      - resource_type: Condition           # Condition.code | EpisodeOfCare.type | CarePlan.category
        codes:
          - {system: "http://snomed.info/sct", codes: ["84114007"]}
          - {system: "http://hl7.org/fhir/sid/icd-10", codes: ["I50*"]}
        min_age_years: 75                  # optional, from Patient.birthDate
    rules:
      - id: weight-gain-3d
        kind: change_over_window           # threshold | repeated_threshold | count_in_window |
        severity: high                     # change_over_window | readmission |
        title: Weight gain                 # missing_expected | occurrence
        text: Rapid weight gain, review fluid status.   # for the coordinator; no patient data
        episode: enrolment                 # or trigger: the dedup episode of the alert
        match:
          resource_types: [Observation]
          codes: [{system: "http://loinc.org", codes: ["29463-7"]}]
        direction: increase
        comparator: ">"
        amount: {value: 2, unit: kg}
        window: 3d

Durations are `<n><unit>` with unit s, m, h, d or w. Units are UCUM codes (see `units.py`).
Codes compare with dots ignored (ICD-10 `I50.9` = `I509`); a trailing `*` makes a prefix and
`ranges: ["W00-W19"]` an inclusive range on the leading characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from caremesh.errors import ConfigurationError
from caremesh.pathways.units import SUPPORTED_UNITS, unit_family

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SLUG = r"^[a-z0-9][a-z0-9-]{0,63}$"
_ORG_REF = re.compile(r"^Organization/[A-Za-z0-9\-.]{1,64}$")


def _parse_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("a duration is <number><unit> with unit s, m, h, d or w (e.g. 3d)")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


Duration = Annotated[timedelta, BeforeValidator(_parse_duration)]
Severity = Literal["low", "medium", "high", "critical"]
Comparator = Literal[">", ">=", "<", "<="]
MatchableType = Literal["Observation", "Condition", "Encounter", "Procedure"]
EnrolmentType = Literal["Condition", "EpisodeOfCare", "CarePlan"]


def normalise_code(code: str) -> str:
    """A code as compared by pathways: dots removed, upper case (ICD-10 `i50.9` = `I509`)."""
    return code.replace(".", "").strip().upper()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeSet(_Model):
    """Codes of one code system: exact codes, `X*` prefixes, and `A00-B99` ranges."""

    system: str = Field(pattern=r"^(https?://|urn:)\S+$")
    codes: tuple[str, ...] = ()
    ranges: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> CodeSet:
        if not self.codes and not self.ranges:
            raise ValueError("a code set needs at least one of codes or ranges")
        for item in self.ranges:
            low, sep, high = item.partition("-")
            if not sep or not low or len(normalise_code(low)) != len(normalise_code(high)):
                raise ValueError("a range is LOW-HIGH with bounds of the same length (W00-W19)")
        return self

    def matches(self, system: str | None, code: str | None) -> bool:
        """Whether a coding (system, code) is in this set."""
        if system != self.system or not code:
            return False
        found = normalise_code(code)
        for wanted in self.codes:
            if wanted.endswith("*"):
                if found.startswith(normalise_code(wanted[:-1])):
                    return True
            elif found == normalise_code(wanted):
                return True
        for item in self.ranges:
            low, _, high = (normalise_code(part) for part in item.partition("-"))
            if low <= found[: len(low)] <= high:
                return True
        return False


class Match(_Model):
    """Which resources a rule looks at: types, codes (any listed set), encounter classes."""

    resource_types: tuple[MatchableType, ...] = Field(min_length=1)
    codes: tuple[CodeSet, ...] = ()
    """Observation/Condition/Procedure.code, Encounter.type; empty means any code."""
    encounter_classes: tuple[str, ...] = ()
    """v3 ActCode codes of Encounter.class (EMER, IMP, AMB...); empty means any class."""
    at: Literal["start", "end"] = "start"
    """For Encounters: whether the event time is period.start (admission) or period.end."""

    @model_validator(mode="after")
    def _check(self) -> Match:
        if (self.encounter_classes or self.at == "end") and "Encounter" not in self.resource_types:
            raise ValueError("encounter_classes and at: end apply to Encounter only")
        return self


class Quantity(_Model):
    """A value with its UCUM unit."""

    value: float
    unit: str

    @model_validator(mode="after")
    def _check(self) -> Quantity:
        if unit_family(self.unit) is None:
            raise ValueError("unsupported UCUM unit; supported: " + ", ".join(SUPPORTED_UNITS))
        return self


class EnrolmentCriterion(_Model):
    """One way to be enrolled: a resource of this type with one of these codes."""

    resource_type: EnrolmentType
    codes: tuple[CodeSet, ...] = Field(min_length=1)
    min_age_years: int | None = Field(default=None, ge=0, le=130)
    """Also requires this age, computed from Patient.birthDate when it is known."""


class _Rule(_Model):
    id: str = Field(pattern=_SLUG)
    severity: Severity
    title: str = Field(min_length=1, max_length=120)
    text: str = Field(min_length=1, max_length=2000)
    episode: Literal["enrolment", "trigger"] = "enrolment"
    """Dedup episode: the enrolling resource, or the resource that triggered the alert."""


def _observations_only(match: Match) -> None:
    if match.resource_types != ("Observation",):
        raise ValueError("quantity rules match resource_types: [Observation] only")


def _distinct_families(thresholds: tuple[Quantity, ...]) -> None:
    families = [unit_family(item.unit) for item in thresholds]
    if len(set(families)) != len(families):
        raise ValueError("give at most one threshold per unit family (they would be converted)")


class ThresholdRule(_Rule):
    """Alert when an Observation's valueQuantity compares to a threshold."""

    kind: Literal["threshold"]
    match: Match
    comparator: Comparator
    thresholds: tuple[Quantity, ...] = Field(min_length=1)
    """One per unit family, e.g. 3.9 mmol/L and 70 mg/dL; a value is compared to the one
    whose unit it converts to, and a value in no listed family is not compared."""

    @model_validator(mode="after")
    def _check(self) -> ThresholdRule:
        _observations_only(self.match)
        _distinct_families(self.thresholds)
        return self


class RepeatedThresholdRule(_Rule):
    """Alert when the threshold is met by `count` Observations within `window`."""

    kind: Literal["repeated_threshold"]
    match: Match
    comparator: Comparator
    thresholds: tuple[Quantity, ...] = Field(min_length=1)
    count: int = Field(default=2, ge=2, le=100)
    window: Duration

    @model_validator(mode="after")
    def _check(self) -> RepeatedThresholdRule:
        _observations_only(self.match)
        _distinct_families(self.thresholds)
        return self


class CountInWindowRule(_Rule):
    """Alert when `count` matching resources fall within `window` of each other."""

    kind: Literal["count_in_window"]
    match: Match
    count: int = Field(ge=1, le=100)
    window: Duration


class ChangeOverWindowRule(_Rule):
    """Alert when a quantity rises (or falls) by `amount` between two readings within `window`."""

    kind: Literal["change_over_window"]
    match: Match
    direction: Literal["increase", "decrease"]
    comparator: Literal[">", ">="] = ">="
    amount: Quantity
    window: Duration

    @model_validator(mode="after")
    def _check(self) -> ChangeOverWindowRule:
        _observations_only(self.match)
        if self.amount.value <= 0:
            raise ValueError("amount must be positive; direction gives the sign")
        return self


class ReadmissionRule(_Rule):
    """Alert when an Encounter of these classes starts within `window` after another one ended."""

    kind: Literal["readmission"]
    encounter_classes: tuple[str, ...] = Field(default=("IMP", "ACUTE", "NONAC"), min_length=1)
    window: Duration


class MissingExpectedRule(_Rule):
    """Alert when no `expected` resource occurs within `deadline` after a `trigger` resource.

    The check runs `grace` after the deadline (default: the pathway's out-of-order tolerance),
    so that an expected resource that arrives late but happened in time still counts.
    """

    kind: Literal["missing_expected"]
    trigger: Match
    expected: Match
    deadline: Duration
    grace: Duration | None = None


class OccurrenceRule(_Rule):
    """Alert when a matching resource occurs (e.g. a fall)."""

    kind: Literal["occurrence"]
    match: Match


Rule = Annotated[
    ThresholdRule
    | RepeatedThresholdRule
    | CountInWindowRule
    | ChangeOverWindowRule
    | ReadmissionRule
    | MissingExpectedRule
    | OccurrenceRule,
    Field(discriminator="kind"),
]
RULE_KINDS = (
    "threshold",
    "repeated_threshold",
    "count_in_window",
    "change_over_window",
    "readmission",
    "missing_expected",
    "occurrence",
)


class Pathway(_Model):
    """One care pathway: enrolment, coordinating organisation and alert rules."""

    id: str = Field(pattern=_SLUG)
    title: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=40)
    description: str | None = None
    coordinator: str = Field(pattern=_ORG_REF.pattern)
    """`Organization/<id>` receiving the alerts."""
    out_of_order_tolerance: Duration = timedelta(hours=24)
    enrolment: tuple[EnrolmentCriterion, ...] = Field(min_length=1)
    rules: tuple[Rule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Pathway:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError("duplicate rule id " + rule.id)
            seen.add(rule.id)
        return self

    def with_coordinator(self, reference: str) -> Pathway:
        """A copy whose alerts go to another `Organization/<id>` (configuration override)."""
        if not _ORG_REF.match(reference):
            raise ConfigurationError(f"pathway {self.id}: coordinator must be Organization/<id>")
        return self.model_copy(update={"coordinator": reference})

    @property
    def needs_age(self) -> bool:
        """Whether any enrolment criterion needs Patient.birthDate."""
        return any(item.min_age_years is not None for item in self.enrolment)


AnyRule = (
    ThresholdRule
    | RepeatedThresholdRule
    | CountInWindowRule
    | ChangeOverWindowRule
    | ReadmissionRule
    | MissingExpectedRule
    | OccurrenceRule
)


def rule_window(rule: AnyRule) -> timedelta:
    """How far back in clinical time a rule looks (0 for single-resource rules)."""
    if isinstance(rule, MissingExpectedRule):
        return rule.deadline + (rule.grace or timedelta(0))
    if isinstance(rule, ThresholdRule | OccurrenceRule):
        return timedelta(0)
    return rule.window


def _describe(file: Path, raw: Any, exc: ValidationError) -> str:
    """File, then per error: rule id, field path and message; never an input value."""
    errors = exc.errors(include_input=False, include_url=False)
    locs = [tuple(error["loc"]) for error in errors]
    parts = []
    for error, loc_tuple in zip(errors, locs, strict=True):
        if error["type"] == "too_short" and any(
            len(other) > len(loc_tuple) and other[: len(loc_tuple)] == loc_tuple for other in locs
        ):
            continue  # "at least 1 item" only because an item below failed: noise
        loc = list(loc_tuple)
        rule_id = None
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            if len(loc) >= 3 and loc[2] in RULE_KINDS:
                del loc[2]
            rules = raw.get("rules") if isinstance(raw, dict) else None
            if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
                found = rules[loc[1]].get("id")
                rule_id = found if isinstance(found, str) else None
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        if error["type"] == "union_tag_invalid":
            message = "unknown rule kind; expected one of " + ", ".join(RULE_KINDS)
        elif error["type"] == "union_tag_not_found":
            message = "missing kind; expected one of " + ", ".join(RULE_KINDS)
        else:
            message = error["msg"]
        where = f"rule {rule_id}: " if rule_id else ""
        parts.append(f"{where}field {field or '(root)'}: {message}")
    return f"{file}: " + "; ".join(parts)


def parse_pathway(raw: Any, *, source: str | Path = "<memory>") -> Pathway:
    """Validate an already-parsed YAML document into a Pathway, or raise ConfigurationError."""
    file = Path(source)
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{file}: a pathway file must be a YAML mapping")
    try:
        return Pathway.model_validate(raw)
    except ValidationError as exc:
        raise ConfigurationError(_describe(file, raw, exc)) from None


def load_pathway(path: str | Path, *, coordinator: str | None = None) -> Pathway:
    """Read and check one pathway file; `coordinator` overrides its coordinating organisation."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{file}: cannot read ({type(exc).__name__})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigurationError(f"{file}: not valid YAML at {where}") from None
    pathway = parse_pathway(raw, source=file)
    return pathway.with_coordinator(coordinator) if coordinator else pathway


def load_pathways(
    directory: str | Path, *, coordinators: Mapping[str, str] | None = None
) -> dict[str, Pathway]:
    """Every `*.yaml`/`*.yml` pathway in `directory`, by id; `coordinators` maps id → org ref."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigurationError(f"{folder}: pathway directory does not exist")
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not files:
        raise ConfigurationError(f"{folder}: no pathway files (*.yaml)")
    found: dict[str, Pathway] = {}
    origin: dict[str, Path] = {}
    for file in files:
        pathway = load_pathway(file)
        if pathway.id in found:
            raise ConfigurationError(
                f"{file}: pathway id {pathway.id} already in {origin[pathway.id]}"
            )
        found[pathway.id] = pathway
        origin[pathway.id] = file
    for pathway_id, reference in (coordinators or {}).items():
        if pathway_id not in found:
            raise ConfigurationError(f"coordinator override for unknown pathway {pathway_id}")
        found[pathway_id] = found[pathway_id].with_coordinator(reference)
    return found


def shipped_directory() -> Path:
    """The folder of the example pathways shipped with caremesh."""
    return Path(__file__).with_name("shipped")


def load_shipped_pathways(coordinators: Mapping[str, str] | None = None) -> dict[str, Pathway]:
    """The shipped example pathways (not medical advice), by id."""
    return load_pathways(shipped_directory(), coordinators=coordinators)
