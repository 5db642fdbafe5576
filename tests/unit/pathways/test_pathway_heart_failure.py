"""Scenario tests of the shipped heart-failure pathway: weight gain, readmission, follow-up."""

from __future__ import annotations

import pytest

from caremesh.pathways import PatientPathwayState, close_alert
from tests.unit.pathways.pathway_fixtures import (
    ICD10,
    OTHER_PATIENT,
    SHIPPED,
    SNOMED,
    at,
    condition,
    encounter,
    episode,
    feed,
    feed_tick,
    observation,
    rules_of,
)

HF = SHIPPED["heart-failure"]
ENROL = (condition("hf-1", SNOMED, "84114007", when=at(-100)), at(-1))
WEIGHT = "29463-7"


def weight(ident: str, kg: float, day: float, unit: str = "kg") -> dict[str, object]:
    return observation(ident, WEIGHT, kg, unit, when=at(day))


@pytest.mark.parametrize(
    ("first", "second", "gap_days", "alerts"),
    [
        pytest.param(80.0, 82.1, 2.0, 1, id="just-above-2kg"),
        pytest.param(80.0, 82.0, 2.0, 0, id="exactly-2kg-is-not-over"),
        pytest.param(80.0, 81.9, 1.0, 0, id="just-below"),
        pytest.param(80.0, 82.5, 3.0, 1, id="window-edge-inside"),
        pytest.param(80.0, 82.5, 3.0 + 1 / 86400, 0, id="window-just-outside"),
        pytest.param(82.5, 80.0, 2.0, 0, id="loss-is-not-gain"),
    ],
)
def test_weight_gain_threshold_and_window(
    first: float, second: float, gap_days: float, alerts: int
) -> None:
    _, raised = feed(
        HF,
        [ENROL, (weight("w1", first, 0), at(0)), (weight("w2", second, gap_days), at(gap_days))],
    )
    assert rules_of(raised) == ["weight-gain-3d"] * alerts


def test_weight_in_pounds_is_converted() -> None:
    # 176.4 lb = 80.01 kg; 181.5 lb = 82.33 kg: a gain of 2.3 kg.
    steps = [ENROL, (weight("w1", 176.4, 0, "[lb_av]"), at(0))]
    steps.append((weight("w2", 181.5, 1, "[lb_av]"), at(1)))
    _, raised = feed(HF, steps)
    assert rules_of(raised) == ["weight-gain-3d"]
    assert raised[0].about == ("Observation/w1", "Observation/w2")


def test_weight_without_ucum_unit_is_not_compared() -> None:
    bad = weight("w2", 90.0, 1)
    bad["valueQuantity"] = {"value": 90.0, "unit": "lbs"}
    _, raised = feed(HF, [ENROL, (weight("w1", 80.0, 0), at(0)), (bad, at(1))])
    assert raised == []


def test_no_alert_when_not_enrolled() -> None:
    _, raised = feed(HF, [(weight("w1", 80.0, 0), at(0)), (weight("w2", 85.0, 1), at(1))])
    assert raised == []


@pytest.mark.parametrize(
    "enrolling",
    [
        condition("hf-icd", ICD10, "I50.9"),
        condition("hf-icd2", ICD10, "I509"),
        episode("ep-1", "heart-failure"),
    ],
    ids=["icd10-dotted", "icd10-undotted", "episode-of-care"],
)
def test_enrolment_by_icd10_or_episode(enrolling: dict[str, object]) -> None:
    state, _ = feed(HF, [(enrolling, at(0))])
    assert state.enrolled
    assert state.episode == f"{enrolling['resourceType']}/{enrolling['id']}"


@pytest.mark.parametrize(
    "resource",
    [
        condition("x", ICD10, "I42.0"),
        condition("x", SNOMED, "84114007", verification="refuted"),
        condition("x", SNOMED, "84114007", clinical="resolved"),
        episode("x", "copd"),
        episode("x", "heart-failure", status="finished"),
    ],
    ids=["other-code", "refuted", "resolved", "other-pathway", "finished-episode"],
)
def test_not_enrolled_by(resource: dict[str, object]) -> None:
    state, _ = feed(HF, [(resource, at(0))])
    assert not state.enrolled


def test_finished_episode_unenrols_and_forgets_readings() -> None:
    state, _ = feed(
        HF,
        [
            (episode("ep-1", "heart-failure"), at(0)),
            (weight("w1", 80.0, 0), at(0)),
            (episode("ep-1", "heart-failure", status="finished"), at(1)),
        ],
    )
    assert not state.enrolled
    assert state.records == {}
    _, raised = feed(HF, [(weight("w2", 85.0, 1), at(1))], state)
    assert raised == []


def test_out_of_order_within_tolerance_still_alerts() -> None:
    # The later reading arrives first; the earlier one arrives 23 h after it was taken.
    steps = [ENROL, (weight("w2", 82.5, 2), at(2)), (weight("w1", 80.0, 0), at(0, hours=23))]
    _, raised = feed(HF, steps)
    assert rules_of(raised) == ["weight-gain-3d"]
    assert raised[0].occurred_at == int(at(2).timestamp())


def test_arrival_beyond_window_plus_tolerance_is_ignored() -> None:
    # Horizon = 3 d window + 24 h tolerance: a reading taken 4 d + 1 s before `now` is too late.
    steps = [ENROL, (weight("w2", 82.5, 2), at(2)), (weight("w1", 80.0, 0), at(4, seconds=1))]
    _, raised = feed(HF, steps)
    assert raised == []


def test_same_condition_twice_gives_one_alert_then_a_new_one_after_close() -> None:
    steps = [ENROL, (weight("w1", 80.0, 0), at(0)), (weight("w2", 82.5, 1), at(1))]
    state, first = feed(HF, steps)
    # Further gain while the alert is open: absorbed. Re-delivery: absorbed.
    state, more = feed(
        HF, [(weight("w3", 83.0, 1.5), at(1.5)), (weight("w2", 82.5, 1), at(1.6))], state
    )
    assert len(first) == 1
    assert more == []
    assert list(state.open_alerts) == ["weight-gain-3d|Condition/hf-1"]

    closed = close_alert(state, first[0].alert_id)
    # Re-delivery after close is not new evidence.
    closed, redelivered = feed(HF, [(weight("w3", 83.0, 1.5), at(1.7))], closed)
    assert redelivered == []
    _, again = feed(HF, [(weight("w4", 84.0, 2), at(2))], closed)
    assert rules_of(again) == ["weight-gain-3d"]
    assert again[0].alert_id != first[0].alert_id
    assert again[0].sequence == 1


def test_close_alert_does_not_change_its_input_and_accepts_the_key() -> None:
    steps = [ENROL, (weight("w1", 80.0, 0), at(0)), (weight("w2", 82.5, 1), at(1))]
    state, raised = feed(HF, steps)
    closed = close_alert(state, raised[0].key)
    assert closed.open_alerts == {}
    assert raised[0].key in state.open_alerts
    assert close_alert(closed, "unknown").to_dict() == closed.to_dict()


def test_replay_gives_the_same_alert_ids() -> None:
    steps = [ENROL, (weight("w1", 80.0, 0), at(0)), (weight("w2", 82.5, 1), at(1))]
    _, first = feed(HF, steps)
    _, second = feed(HF, steps)
    _, other_patient = feed(HF, steps, patient_key=OTHER_PATIENT)
    assert [a.alert_id for a in first] == [a.alert_id for a in second]
    assert first[0].alert_id != other_patient[0].alert_id


@pytest.mark.parametrize(
    ("gap_days", "alerts"),
    [
        pytest.param(29.9, 1, id="readmitted-inside-30d"),
        pytest.param(30.0, 1, id="readmitted-at-30d"),
        pytest.param(30.1, 0, id="readmitted-after-30d"),
    ],
)
def test_readmission_within_30_days(gap_days: float, alerts: int) -> None:
    discharge = at(5)
    steps = [
        ENROL,
        (encounter("e1", "IMP", start=at(0)), at(0)),
        (encounter("e1", "IMP", start=at(0), end=discharge), at(5)),
        (encounter("e2", "IMP", start=at(5 + gap_days)), at(5 + gap_days)),
    ]
    _, raised = feed(HF, steps)
    readmissions = [a for a in raised if a.rule_id == "readmission-30d"]
    assert len(readmissions) == alerts
    if alerts:
        assert readmissions[0].about == ("Encounter/e1", "Encounter/e2")
        assert readmissions[0].episode == "Encounter/e2"


def test_readmission_ignores_emergency_visits_and_reads_r5() -> None:
    steps = [
        ENROL,
        (encounter("e1", "IMP", start=at(0), end=at(2), r5=True), at(2)),
        (encounter("e2", "EMER", start=at(4), end=at(4.2)), at(4.2)),
    ]
    _, raised = feed(HF, steps)
    assert "readmission-30d" not in rules_of(raised)
    _, raised = feed(HF, [*steps, (encounter("e3", "ACUTE", start=at(6), r5=True), at(6))])
    assert "readmission-30d" in rules_of(raised)


def test_follow_up_missing_is_raised_by_tick_after_deadline_and_grace() -> None:
    state, raised = feed(HF, [ENROL, (encounter("e1", "IMP", start=at(0), end=at(3)), at(3))])
    assert raised == []
    # Deadline 14 d after discharge, plus 24 h grace (the tolerance).
    state, early = feed_tick(HF, state, at(3 + 14 + 0.99))
    assert early == []
    state, due = feed_tick(HF, state, at(3 + 15))
    assert rules_of(due) == ["no-follow-up-14d"]
    assert due[0].about == ("Encounter/e1",)
    assert due[0].occurred_at == int(at(17).timestamp())
    _, again = feed_tick(HF, state, at(3 + 16))
    assert again == []


@pytest.mark.parametrize(
    ("visit_day", "arrival_day", "alerts"),
    [
        pytest.param(10, 10, 0, id="visit-in-time"),
        pytest.param(16.5, 17.5, 0, id="visit-in-time-arriving-within-grace"),
        pytest.param(17.5, 17.5, 1, id="visit-after-deadline"),
    ],
)
def test_follow_up_present(visit_day: float, arrival_day: float, alerts: int) -> None:
    state, _ = feed(
        HF,
        [
            ENROL,
            (encounter("e1", "IMP", start=at(0), end=at(3)), at(3)),
            (encounter("v1", "AMB", start=at(visit_day), end=at(visit_day)), at(arrival_day)),
        ],
    )
    _, raised = feed_tick(HF, state, at(20))
    assert rules_of(raised) == ["no-follow-up-14d"] * alerts


def test_state_round_trip_mid_sequence_gives_the_same_result() -> None:
    steps = [
        ENROL,
        (weight("w1", 80.0, 0), at(0)),
        (encounter("e1", "IMP", start=at(0.5)), at(0.5)),
        (weight("w2", 82.5, 1), at(1)),
        (encounter("e1", "IMP", start=at(0.5), end=at(1.5)), at(1.5)),
        (encounter("e2", "IMP", start=at(10)), at(10)),
    ]
    plain_state, plain = feed(HF, steps)
    restarted_state, restarted = feed(HF, steps, round_trip=True)
    assert [a.alert_id for a in plain] == [a.alert_id for a in restarted]
    assert len(plain) == 2
    assert plain_state.to_dict() == restarted_state.to_dict()
    assert PatientPathwayState.from_dict(plain_state.to_dict()).to_dict() == plain_state.to_dict()


def test_evaluate_does_not_change_the_state_it_was_given() -> None:
    state, _ = feed(HF, [ENROL, (weight("w1", 80.0, 0), at(0))])
    before = state.to_dict()
    feed(HF, [(weight("w2", 85.0, 1), at(1))], state)
    assert state.to_dict() == before


def test_kept_readings_are_pruned_outside_window_plus_tolerance() -> None:
    state, _ = feed(HF, [ENROL, (weight("w1", 80.0, 0), at(0))])
    state, _ = feed(HF, [(weight("w2", 80.0, 3.9), at(3.9))], state)
    assert [r.ref for r in state.records["weight-gain-3d"]] == ["Observation/w1", "Observation/w2"]
    state, _ = feed(HF, [(weight("w3", 80.0, 4.1), at(4.1))], state)
    assert [r.ref for r in state.records["weight-gain-3d"]] == ["Observation/w2", "Observation/w3"]


def test_entered_in_error_reading_is_forgotten() -> None:
    state, _ = feed(HF, [ENROL, (weight("w1", 80.0, 0), at(0))])
    retracted = weight("w1", 80.0, 0)
    retracted["status"] = "entered-in-error"
    state, _ = feed(HF, [(retracted, at(0.5))], state)
    _, raised = feed(HF, [(weight("w2", 82.5, 1), at(1))], state)
    assert raised == []
