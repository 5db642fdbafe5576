"""UCUM conversion and what rules read from FHIR resources (times, codes, values)."""

from __future__ import annotations

from typing import Any

import pytest

from caremesh.pathways.resource import (
    age_years,
    clinical_time,
    encounter_classes,
    is_void,
    parse_time,
    quantity,
)
from caremesh.pathways.units import convert, quantity_unit

UCUM = "http://unitsofmeasure.org"


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (2000, "g", "kg", 2.0),
        (1, "[lb_av]", "kg", 0.45359237),
        (2, "kg", "[lb_av]", 4.409245243697551),
        (3900, "umol/L", "mmol/L", 3.9),
        (1, "g/L", "mg/dL", 100.0),
        (7.5, "kPa", "mm[Hg]", 56.25461735),
        (9, "%", "%", 9),
        (9, "%", "mmol/mol", None),  # HbA1c NGSP vs IFCC: not a UCUM conversion
        (70, "mg/dL", "mmol/L", None),  # needs the molar mass of glucose
        (1, "kg", "furlong", None),
    ],
)
def test_convert(value: float, source: str, target: str, expected: float | None) -> None:
    found = convert(value, source, target)
    if expected is None:
        assert found is None
    else:
        assert found == pytest.approx(expected)


@pytest.mark.parametrize(
    ("quantity_json", "unit"),
    [
        ({"value": 1, "system": UCUM, "code": "kg", "unit": "kilogram"}, "kg"),
        ({"value": 1, "code": "kg"}, "kg"),
        ({"value": 1, "unit": "kg"}, "kg"),
        ({"value": 1, "unit": "lbs"}, None),
        ({"value": 1, "system": "http://example.org/units", "code": "kg"}, None),
    ],
)
def test_quantity_unit(quantity_json: dict[str, object], unit: str | None) -> None:
    assert quantity_unit(quantity_json) == unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01T08:00:00Z", 1740816000),
        ("2025-03-01T09:00:00+01:00", 1740816000),
        ("2025-03-01T08:00:00.250Z", 1740816000),
        ("2025-03-01", 1740787200),
        ("2025-03", None),
        ("2025", None),
        ("yesterday", None),
        (None, None),
    ],
)
def test_parse_time(text: str | None, expected: int | None) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    ("resource", "at", "expected"),
    [
        ({"resourceType": "Observation", "effectiveDateTime": "2025-03-01"}, "start", 1740787200),
        (
            {"resourceType": "Observation", "effectivePeriod": {"start": "2025-03-01"}},
            "start",
            1740787200,
        ),
        ({"resourceType": "Observation", "issued": "2025-03-01T00:00:00Z"}, "start", 1740787200),
        ({"resourceType": "Observation", "effectiveDateTime": "2025"}, "start", None),
        ({"resourceType": "Condition", "recordedDate": "2025-03-01"}, "start", 1740787200),
        (
            {"resourceType": "Encounter", "period": {"start": "2025-03-01", "end": "2025-03-02"}},
            "end",
            1740873600,
        ),
        (
            {"resourceType": "Encounter", "actualPeriod": {"start": "2025-03-01"}},
            "start",
            1740787200,
        ),
        ({"resourceType": "Encounter", "period": {"start": "2025-03-01"}}, "end", None),
        ({"resourceType": "Procedure", "occurrenceDateTime": "2025-03-01"}, "start", 1740787200),
        ({"resourceType": "Patient", "birthDate": "2025-03-01"}, "start", None),
    ],
)
def test_clinical_time_is_never_arrival_time(
    resource: dict[str, Any], at: str, expected: int | None
) -> None:
    assert clinical_time(resource, at) == expected


def test_encounter_class_r4_and_r5() -> None:
    r4 = {"resourceType": "Encounter", "class": {"code": "EMER"}}
    r5 = {"resourceType": "Encounter", "class": [{"coding": [{"code": "IMP"}]}]}
    assert encounter_classes(r4) == {"EMER"}
    assert encounter_classes(r5) == {"IMP"}


@pytest.mark.parametrize(
    ("resource", "void"),
    [
        ({"status": "entered-in-error"}, True),
        ({"status": "cancelled"}, True),
        ({"status": "planned"}, True),
        ({"status": "final"}, False),
        ({"verificationStatus": {"coding": [{"code": "refuted"}]}}, True),
        ({"verificationStatus": {"coding": [{"code": "confirmed"}]}}, False),
    ],
)
def test_is_void(resource: dict[str, Any], void: bool) -> None:
    assert is_void(resource) is void


def test_quantity_ignores_booleans_and_missing_units() -> None:
    assert quantity({"valueQuantity": {"value": True, "code": "kg"}}) is None
    assert quantity({"valueQuantity": {"value": 3}}) is None
    assert quantity({"valueQuantity": {"value": 3, "code": "kg"}}) == (3.0, "kg")


@pytest.mark.parametrize(
    ("birth", "expected"),
    [
        ("1950-03-01", 75),
        ("1950-03-02", 74),
        ("1950", 74),  # could be born on 31 December: counted from the last possible day
        ("1949-12", 75),
        ("2030-01-01", None),
        ("not a date", None),
    ],
)
def test_age_years_at_2025_03_01(birth: str, expected: int | None) -> None:
    assert age_years(birth, 1740816000) == expected
