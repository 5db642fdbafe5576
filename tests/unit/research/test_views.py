"""The SQL on FHIR v2 ViewDefinition runner over small synthetic resources: columns, forEach,
forEachOrNull, unionAll, where, constants, reference keys, and the refusals of bad views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from caremesh.errors import ConfigurationError
from caremesh.research.sql_on_fhir import ViewEvaluationError, load_view, read_view, view_rows

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "gender": "female",
    "birthDate": "1950",
    "address": [{"postalCode": "69"}, {"postalCode": "38"}],
}
OBS = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "subject": {"reference": "Patient/p1"},
    "code": {
        "coding": [
            {"system": "http://loinc.org", "code": "29463-7"},
            {"system": "http://snomed.info/sct", "code": "27113001"},
        ]
    },
    "valueQuantity": {"value": 81.5, "unit": "kg"},
    "effectiveDateTime": "2026-03-01T08:00:00+01:00",
}


def _rows(view: dict[str, Any], *resources: dict[str, Any]) -> list[dict[str, Any]]:
    return list(view_rows(load_view(view), iter(resources)))


def test_columns_keep_their_order_and_other_types_give_no_rows() -> None:
    view = {
        "resource": "Patient",
        "select": [
            {"column": [{"name": "id", "path": "getResourceKey()"}]},
            {"column": [{"name": "sex", "path": "gender"}, {"name": "born", "path": "birthDate"}]},
        ],
    }
    rows = _rows(view, PATIENT, OBS)
    assert rows == [{"id": "p1", "sex": "female", "born": "1950"}]
    assert list(rows[0]) == ["id", "sex", "born"]


def test_for_each_gives_one_row_per_node_and_or_null_keeps_the_resource() -> None:
    codes = {
        "resource": "Observation",
        "select": [
            {"column": [{"name": "subject", "path": "subject.getReferenceKey(Patient)"}]},
            {
                "forEach": "code.coding",
                "column": [{"name": "system", "path": "system"}, {"name": "code", "path": "code"}],
            },
        ],
    }
    assert _rows(codes, OBS) == [
        {"subject": "p1", "system": "http://loinc.org", "code": "29463-7"},
        {"subject": "p1", "system": "http://snomed.info/sct", "code": "27113001"},
    ]
    bare = {**OBS, "code": {"text": "weight"}}
    assert _rows(codes, bare) == []
    codes["select"][1] = {**codes["select"][1], "forEachOrNull": "code.coding"}
    del codes["select"][1]["forEach"]
    assert _rows(codes, bare) == [{"subject": "p1", "system": None, "code": None}]


def test_choice_types_union_all_where_and_constants() -> None:
    view = {
        "resource": "Observation",
        "constant": [{"name": "loinc", "valueUri": "http://loinc.org"}],
        "where": [{"path": "status = 'final'"}],
        "select": [
            {
                "column": [
                    {"name": "value", "path": "value.ofType(Quantity).value"},
                    {"name": "unit", "path": "value.ofType(Quantity).unit"},
                    {"name": "loinc", "path": "code.coding.where(system = %loinc).code"},
                ]
            },
            {
                "unionAll": [
                    {"column": [{"name": "kind", "path": "'first'"}]},
                    {"column": [{"name": "kind", "path": "'second'"}]},
                ]
            },
        ],
    }
    assert _rows(view, OBS) == [
        {"value": 81.5, "unit": "kg", "loinc": "29463-7", "kind": "first"},
        {"value": 81.5, "unit": "kg", "loinc": "29463-7", "kind": "second"},
    ]
    assert _rows(view, {**OBS, "status": "cancelled"}) == []


def test_a_single_column_with_several_values_is_an_error_and_collections_are_lists() -> None:
    view = {
        "resource": "Patient",
        "select": [{"column": [{"name": "cp", "path": "address.postalCode"}]}],
    }
    with pytest.raises(ViewEvaluationError, match="collection"):
        _rows(view, PATIENT)
    view["select"][0]["column"][0]["collection"] = True
    assert _rows(view, PATIENT) == [{"cp": ["69", "38"]}]


@pytest.mark.parametrize(
    ("view", "message"),
    [
        ({}, "resource"),
        ({"resource": "Patient"}, "select"),
        ({"resource": "Patient", "select": [{"forEach": "@@"}]}, "FHIRPath"),
        ({"resource": "Patient", "select": [{"column": [{"name": "a b", "path": "id"}]}]}, "name"),
        (
            {
                "resource": "Patient",
                "select": [{"column": [{"name": "a", "path": "id"}, {"name": "a", "path": "id"}]}],
            },
            "unique",
        ),
        (
            {
                "resource": "Patient",
                "select": [
                    {
                        "unionAll": [
                            {"column": [{"name": "a", "path": "id"}]},
                            {"column": [{"name": "b", "path": "id"}]},
                        ]
                    }
                ],
            },
            "unionAll",
        ),
    ],
)
def test_bad_views_are_refused_in_one_line(view: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_view(view)
    assert "\n" not in str(caught.value)


def test_where_must_be_boolean() -> None:
    view = {
        "resource": "Patient",
        "where": [{"path": "gender"}],
        "select": [{"column": [{"name": "id", "path": "id"}]}],
    }
    with pytest.raises(ViewEvaluationError, match="boolean"):
        _rows(view, PATIENT)


def test_read_view_reports_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read view"):
        read_view(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        read_view(broken)


def test_boundaries_of_partial_dates_and_decimals() -> None:
    view = {
        "resource": "Patient",
        "select": [
            {
                "column": [
                    {"name": "born_from", "path": "birthDate.lowBoundary()", "type": "date"},
                    {"name": "born_to", "path": "birthDate.highBoundary()", "type": "date"},
                ]
            }
        ],
    }
    assert _rows(view, PATIENT) == [{"born_from": "1950-01-01", "born_to": "1950-12-31"}]
    assert _rows(view, {**PATIENT, "birthDate": "2024-02"}) == [
        {"born_from": "2024-02-01", "born_to": "2024-02-29"}
    ]
    weight = {
        "resource": "Observation",
        "select": [
            {"column": [{"name": "low", "path": "value.ofType(Quantity).value.lowBoundary()"}]}
        ],
    }
    assert _rows(weight, OBS) == [{"low": 81.45}]
