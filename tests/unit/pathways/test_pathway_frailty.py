"""Scenario tests of the shipped elderly-frailty pathway: age-bound enrolment, ED visits, falls."""

from __future__ import annotations

import pytest

from tests.unit.pathways.pathway_fixtures import (
    ICD10,
    SHIPPED,
    SNOMED,
    at,
    condition,
    encounter,
    episode,
    feed,
    feed_tick,
    observation,
    patient,
    rules_of,
)

FRAIL = SHIPPED["elderly-frailty"]
FRAILTY = condition("fr-1", SNOMED, "248279007", when=at(-30))
# T0 is 2025-03-01: born 1950-03-01 turns 75 on T0, born 1950-03-02 the next day.
AGED_75 = patient("1950-03-01")
AGED_74 = patient("1950-03-02")


@pytest.mark.parametrize(
    ("steps", "enrolled"),
    [
        pytest.param([(AGED_75, at(0)), (FRAILTY, at(0))], True, id="75-patient-first"),
        pytest.param([(FRAILTY, at(0)), (AGED_75, at(0))], True, id="75-condition-first"),
        pytest.param([(AGED_74, at(0)), (FRAILTY, at(0))], False, id="74-not-enrolled"),
        pytest.param([(patient("1950"), at(0)), (FRAILTY, at(0))], False, id="year-only-74-or-75"),
        pytest.param([(patient("1949"), at(0)), (FRAILTY, at(0))], True, id="year-only-75"),
        pytest.param([(FRAILTY, at(0))], False, id="age-unknown"),
        pytest.param([(AGED_75, at(0))], False, id="no-frailty"),
        pytest.param(
            [(AGED_75, at(0)), (condition("r", ICD10, "R54"), at(0))], True, id="icd10-r54"
        ),
        pytest.param([(episode("ep", "elderly-frailty"), at(0))], True, id="episode-any-age"),
    ],
)
def test_enrolment(steps: list[tuple[dict[str, object], object]], enrolled: bool) -> None:
    state, _ = feed(FRAIL, steps)  # type: ignore[arg-type]
    assert state.enrolled is enrolled


def test_enrolled_on_tick_when_turning_75() -> None:
    state, _ = feed(FRAIL, [(AGED_74, at(0)), (FRAILTY, at(0))])
    assert not state.enrolled
    state, _ = feed_tick(FRAIL, state, at(1))
    assert state.enrolled
    assert state.episode == "Condition/fr-1"


def test_birth_date_is_kept_only_by_pathways_with_an_age_criterion() -> None:
    state, _ = feed(SHIPPED["copd"], [(AGED_75, at(0))])
    assert state.birth_date is None


ENROL = [(AGED_75, at(0)), (FRAILTY, at(0))]


@pytest.mark.parametrize(
    ("second_visit_day", "alerts"),
    [
        pytest.param(89.9, 1, id="inside-90d"),
        pytest.param(90, 1, id="edge-90d"),
        pytest.param(90.1, 0, id="outside-90d"),
    ],
)
def test_two_emergency_visits(second_visit_day: float, alerts: int) -> None:
    day = second_visit_day
    steps = [
        *ENROL,
        (encounter("ed1", "EMER", start=at(1), end=at(1.2)), at(1.2)),
        (encounter("ed2", "EMER", start=at(1 + day)), at(1 + day)),
    ]
    _, raised = feed(FRAIL, steps)
    assert rules_of(raised) == ["two-emergency-visits-90d"] * alerts


def test_one_visit_sent_twice_counts_once_and_other_classes_do_not_count() -> None:
    steps = [
        *ENROL,
        (encounter("ed1", "EMER", start=at(1)), at(1)),
        (encounter("ed1", "EMER", start=at(1), end=at(1.3)), at(1.3)),
        (encounter("amb", "AMB", start=at(2), end=at(2)), at(2)),
        (encounter("cancel", "EMER", start=at(3), status="cancelled"), at(3)),
    ]
    _, raised = feed(FRAIL, steps)
    assert raised == []


def test_visits_before_enrolment_do_not_count() -> None:
    steps = [
        (encounter("ed1", "EMER", start=at(1)), at(1)),
        *[(resource, at(2)) for resource, _ in ENROL],
        (encounter("ed2", "EMER", start=at(3)), at(3)),
    ]
    _, raised = feed(FRAIL, steps)
    assert raised == []


@pytest.mark.parametrize(
    ("resource", "alerts"),
    [
        pytest.param(condition("f", SNOMED, "217082002", when=at(5)), 1, id="snomed-condition"),
        pytest.param(condition("f", ICD10, "W19", when=at(5)), 1, id="icd10-w19"),
        pytest.param(condition("f", ICD10, "W01.0", when=at(5)), 1, id="icd10-w01-0"),
        pytest.param(condition("f", ICD10, "W00", when=at(5)), 1, id="range-low-bound"),
        pytest.param(condition("f", ICD10, "W20", when=at(5)), 0, id="icd10-w20-not-a-fall"),
        pytest.param(
            {**observation("f", "217082002", 1, "%", when=at(5), system=SNOMED)},
            1,
            id="snomed-observation",
        ),
        pytest.param(
            condition("f", SNOMED, "217082002", when=at(5), verification="entered-in-error"),
            0,
            id="entered-in-error",
        ),
    ],
)
def test_fall(resource: dict[str, object], alerts: int) -> None:
    _, raised = feed(FRAIL, [*ENROL, (resource, at(5, hours=1))])
    assert rules_of(raised) == ["fall"] * alerts


@pytest.mark.parametrize(
    ("delay_hours", "alerts"),
    [pytest.param(71, 1, id="documented-within-72h"), pytest.param(73, 0, id="after-72h")],
)
def test_fall_documented_late(delay_hours: float, alerts: int) -> None:
    fall = condition("f", SNOMED, "217082002", when=at(5))
    _, raised = feed(FRAIL, [*ENROL, (fall, at(5, hours=delay_hours))])
    assert len(raised) == alerts


def test_not_enrolled_no_fall_alert() -> None:
    fall = condition("f", SNOMED, "217082002", when=at(5))
    young = patient("1951-01-01")
    state, raised = feed(FRAIL, [(young, at(0)), (FRAILTY, at(0)), (fall, at(5))])
    assert raised == []
    assert state.pending == [("Condition/fr-1", 75)]
