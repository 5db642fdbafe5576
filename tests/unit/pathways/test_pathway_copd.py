"""Scenario tests of the shipped COPD pathway: SpO2 under 90 % twice within 24 h."""

from __future__ import annotations

import pytest

from tests.unit.pathways.pathway_fixtures import (
    ICD10,
    SHIPPED,
    at,
    condition,
    feed,
    observation,
    rules_of,
)

COPD = SHIPPED["copd"]
ENROL = (condition("copd-1", ICD10, "J44.1", when=at(-300)), at(-1))


def spo2(ident: str, value: float, hours: float, code: str = "59408-5") -> dict[str, object]:
    return observation(ident, code, value, "%", when=at(0, hours=hours))


@pytest.mark.parametrize(
    ("values", "gap_hours", "alerts"),
    [
        pytest.param((89, 88), 6, 1, id="twice-below-6h"),
        pytest.param((89.9, 89.9), 24, 1, id="window-edge-24h"),
        pytest.param((89, 88), 24.01, 0, id="just-outside-24h"),
        pytest.param((90, 88), 6, 0, id="90-is-not-under-90"),
        pytest.param((89, 95), 6, 0, id="once-only"),
    ],
)
def test_repeated_low_saturation(
    values: tuple[float, float], gap_hours: float, alerts: int
) -> None:
    steps = [
        ENROL,
        (spo2("s1", values[0], 0), at(0)),
        (spo2("s2", values[1], gap_hours, "2708-6"), at(0, hours=gap_hours)),
    ]
    _, raised = feed(COPD, steps)
    assert rules_of(raised) == ["low-spo2-repeated-24h"] * alerts
    if alerts:
        assert raised[0].about == ("Observation/s1", "Observation/s2")


def test_one_reading_delivered_twice_is_not_repeated() -> None:
    _, raised = feed(COPD, [ENROL, (spo2("s1", 85, 0), at(0)), (spo2("s1", 85, 0), at(0, 2))])
    assert raised == []


def test_out_of_order_within_tolerance() -> None:
    steps = [ENROL, (spo2("s2", 87, 10), at(0, 10)), (spo2("s1", 88, 0), at(0, 23))]
    _, raised = feed(COPD, steps)
    assert rules_of(raised) == ["low-spo2-repeated-24h"]


def test_out_of_order_beyond_tolerance() -> None:
    # Horizon = 24 h window + 24 h tolerance: a reading taken 48 h + 1 min before `now` is dropped.
    steps = [ENROL, (spo2("s2", 87, 10), at(0, 10)), (spo2("s1", 88, 0), at(0, 48, 60))]
    _, raised = feed(COPD, steps)
    assert raised == []


def test_not_enrolled() -> None:
    _, raised = feed(COPD, [(spo2("s1", 85, 0), at(0)), (spo2("s2", 84, 1), at(0, 1))])
    assert raised == []
