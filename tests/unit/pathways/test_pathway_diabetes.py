"""Scenario tests of the shipped type 2 diabetes pathway: HbA1c and hypoglycaemia."""

from __future__ import annotations

import pytest

from caremesh.pathways import close_alert
from tests.unit.pathways.pathway_fixtures import (
    ICD10,
    SHIPPED,
    SNOMED,
    at,
    condition,
    feed,
    observation,
    rules_of,
)

T2D = SHIPPED["type2-diabetes"]
ENROL = (condition("dm-1", SNOMED, "44054006", when=at(-400)), at(-1))


@pytest.mark.parametrize(
    ("loinc", "value", "unit", "expected"),
    [
        pytest.param("4548-4", 9.1, "%", ["hba1c-above-9"], id="9.1%-above"),
        pytest.param("4548-4", 9.0, "%", [], id="9.0%-not-above"),
        pytest.param("17856-6", 10.2, "%", ["hba1c-above-9"], id="hplc-code"),
        pytest.param("59261-8", 76, "mmol/mol", ["hba1c-above-9"], id="76-mmol/mol"),
        pytest.param("59261-8", 75, "mmol/mol", [], id="75-mmol/mol-not-above"),
        pytest.param("4548-4", 9.5, "mmol/L", [], id="wrong-unit-family-not-compared"),
        pytest.param("2339-0", 69, "mg/dL", ["hypoglycaemia-level-1"], id="69-mg/dL"),
        pytest.param("2339-0", 70, "mg/dL", [], id="70-mg/dL-not-below"),
        pytest.param("15074-8", 3.8, "mmol/L", ["hypoglycaemia-level-1"], id="3.8-mmol/L"),
        pytest.param("15074-8", 3.9, "mmol/L", [], id="3.9-mmol/L-not-below"),
        pytest.param("15074-8", 3800, "umol/L", ["hypoglycaemia-level-1"], id="umol/L-converted"),
        pytest.param(
            "15074-8",
            2.9,
            "mmol/L",
            ["hypoglycaemia-level-1", "hypoglycaemia-level-2"],
            id="2.9-mmol/L-level-2",
        ),
        pytest.param(
            "2339-0", 53, "mg/dL", ["hypoglycaemia-level-1", "hypoglycaemia-level-2"], id="53-mg/dL"
        ),
        pytest.param("2339-0", 54, "mg/dL", ["hypoglycaemia-level-1"], id="54-mg/dL-level-1-only"),
        pytest.param("2345-7", 40, "mg/dL", [], id="code-not-in-rule"),
    ],
)
def test_thresholds(loinc: str, value: float, unit: str, expected: list[str]) -> None:
    _, raised = feed(T2D, [ENROL, (observation("o1", loinc, value, unit, when=at(0)), at(0))])
    assert sorted(rules_of(raised)) == expected


def test_severity_and_priority_per_level() -> None:
    _, raised = feed(T2D, [ENROL, (observation("g", "15074-8", 2.5, "mmol/L", when=at(0)), at(0))])
    assert {a.rule_id: a.severity for a in raised} == {
        "hypoglycaemia-level-1": "medium",
        "hypoglycaemia-level-2": "high",
    }


def test_not_enrolled_patient_gets_no_alert() -> None:
    other = (condition("c", ICD10, "E10.9"), at(-1))  # type 1 diabetes: not this pathway
    _, raised = feed(T2D, [other, (observation("o1", "4548-4", 12.0, "%", when=at(0)), at(0))])
    assert raised == []


def test_enrolled_by_icd10_e11() -> None:
    enrol = (condition("c", ICD10, "E11.65"), at(-1))
    _, raised = feed(T2D, [enrol, (observation("o1", "4548-4", 12.0, "%", when=at(0)), at(0))])
    assert rules_of(raised) == ["hba1c-above-9"]


def test_dedup_then_new_alert_after_close() -> None:
    state, first = feed(
        T2D,
        [
            ENROL,
            (observation("a", "4548-4", 9.8, "%", when=at(0)), at(0)),
            (observation("b", "4548-4", 10.1, "%", when=at(30)), at(30)),
            (observation("a", "4548-4", 9.8, "%", when=at(0)), at(0.5)),  # re-delivered
        ],
    )
    assert rules_of(first) == ["hba1c-above-9"]
    state = close_alert(state, first[0].alert_id)
    _, again = feed(T2D, [(observation("c", "4548-4", 9.4, "%", when=at(90)), at(90))], state)
    assert rules_of(again) == ["hba1c-above-9"]
    assert again[0].sequence == 1
    assert again[0].alert_id != first[0].alert_id


@pytest.mark.parametrize(
    ("delay_hours", "alerts"),
    [pytest.param(23.9, 1, id="late-within-tolerance"), pytest.param(24.1, 0, id="too-late")],
)
def test_single_reading_arriving_late(delay_hours: float, alerts: int) -> None:
    reading = observation("o1", "4548-4", 11.0, "%", when=at(0))
    _, raised = feed(T2D, [ENROL, (reading, at(0, hours=delay_hours))])
    assert len(raised) == alerts


def test_amended_reading_below_threshold_does_not_alert_later() -> None:
    state, _ = feed(T2D, [ENROL, (observation("o1", "4548-4", 8.0, "%", when=at(0)), at(0))])
    _, raised = feed(T2D, [(observation("o1", "4548-4", 9.6, "%", when=at(0)), at(0.2))], state)
    assert rules_of(raised) == ["hba1c-above-9"]
