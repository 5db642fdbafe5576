"""Properties of the engine: arrival order within the tolerance and restarts change nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caremesh.pathways import PatientPathwayState, evaluate, tick
from tests.unit.pathways.pathway_fixtures import (
    PATIENT,
    SHIPPED,
    SNOMED,
    at,
    condition,
    encounter,
    episode,
    observation,
)

TOLERANCE_S = 24 * 3600  # the smallest tolerance of the shipped pathways
SPAN_H = 10 * 24
Event = tuple[dict[str, Any], int]  # resource, clinical time (seconds after T0)


@st.composite
def events(draw: st.DrawFn) -> list[Event]:
    """Weights, SpO2, glucose, encounters and falls over 1.5 to 10 days (dense or sparse)."""
    out: list[Event] = []
    hours = st.integers(0, draw(st.sampled_from([24, 48, 96, SPAN_H])))
    for i in range(draw(st.integers(0, 4))):
        h = draw(hours)
        kg = draw(st.sampled_from([79.0, 80.0, 81.0, 82.1, 83.0]))
        out.append((observation(f"w{i}", "29463-7", kg, "kg", when=at(hours=h)), h * 3600))
    for i in range(draw(st.integers(0, 4))):
        h = draw(hours)
        pct = draw(st.sampled_from([88, 89.9, 90, 91]))
        out.append((observation(f"s{i}", "59408-5", pct, "%", when=at(hours=h)), h * 3600))
    for i in range(draw(st.integers(0, 3))):
        h = draw(hours)
        mmol = draw(st.sampled_from([2.9, 3.0, 3.8, 3.9, 5.0]))
        out.append((observation(f"g{i}", "15074-8", mmol, "mmol/L", when=at(hours=h)), h * 3600))
    for i in range(draw(st.integers(0, 4))):
        h = draw(hours)
        cls = draw(st.sampled_from(["IMP", "AMB", "EMER"]))
        length = draw(st.integers(1, 72))
        visit = encounter(f"e{i}", cls, start=at(hours=h), end=at(hours=h + length))
        out.append((visit, (h + length) * 3600))
    if draw(st.booleans()):
        h = draw(hours)
        out.append((condition("fall", SNOMED, "217082002", when=at(hours=h)), h * 3600))
    return out


def run(
    pathway_id: str, arrivals: list[tuple[dict[str, Any], int]], *, restart: bool
) -> tuple[set[str], dict[str, Any]]:
    pathway = SHIPPED[pathway_id]
    state = PatientPathwayState()
    ids: list[str] = []
    enrol = episode("ep", pathway_id)
    for resource, now in [(enrol, -3600), *arrivals]:
        if restart:
            state = PatientPathwayState.from_dict(json.loads(json.dumps(state.to_dict())))
        state, alerts = evaluate(pathway, state, resource, patient_key=PATIENT, now=at(seconds=now))
        ids.extend(alert.alert_id for alert in alerts)
    state, alerts = tick(pathway, state, at(days=40), patient_key=PATIENT)
    ids.extend(alert.alert_id for alert in alerts)
    assert len(ids) == len(set(ids)), "an alert id was raised twice"
    return set(ids), state.to_dict()


PATHWAYS = ["heart-failure", "type2-diabetes", "copd", "elderly-frailty"]


@pytest.mark.parametrize("pathway_id", PATHWAYS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_arrival_order_within_tolerance_gives_the_same_alert_ids(
    pathway_id: str, data: st.DataObject
) -> None:
    happened = data.draw(events())
    # Whole hours, and the exact tolerance, so that reorderings are frequent and the edge is hit.
    delay = st.one_of(st.integers(0, 24).map(lambda h: h * 3600), st.just(TOLERANCE_S))
    delays = data.draw(st.lists(delay, min_size=len(happened), max_size=len(happened)))
    in_order = sorted(((r, t) for r, t in happened), key=lambda item: item[1])
    late = sorted(
        ((r, t + d) for (r, t), d in zip(happened, delays, strict=True)), key=lambda item: item[1]
    )
    expected, _ = run(pathway_id, in_order, restart=False)
    got, _ = run(pathway_id, late, restart=False)
    assert got == expected


@pytest.mark.parametrize("pathway_id", PATHWAYS)
@settings(max_examples=75, deadline=None)
@given(happened=events())
def test_restarting_from_the_json_state_at_every_step_changes_nothing(
    pathway_id: str, happened: list[Event]
) -> None:
    arrivals = sorted(happened, key=lambda item: item[1])
    plain = run(pathway_id, arrivals, restart=False)
    restarted = run(pathway_id, arrivals, restart=True)
    assert restarted == plain


def test_the_property_scenarios_do_raise_alerts() -> None:
    """Guard against a vacuous property: a fixed sample of the generator raises alerts."""
    arrivals = [
        (observation("w0", "29463-7", 78.0, "kg", when=at(hours=1)), 3600),
        (observation("w1", "29463-7", 84.0, "kg", when=at(hours=30)), 30 * 3600),
        (encounter("e0", "IMP", start=at(hours=2), end=at(hours=20)), 20 * 3600),
        (encounter("e1", "IMP", start=at(hours=100), end=at(hours=120)), 120 * 3600),
    ]
    ids, _ = run("heart-failure", arrivals, restart=False)
    # weight gain, readmission, and two missed follow-ups (tick at day 40)
    assert len(ids) == 4


def test_late_arrival_beyond_the_tolerance_can_change_the_outcome() -> None:
    """The counterpart of the property: the tolerance is a real bound, not decoration."""
    reading = observation("g0", "15074-8", 3.0, "mmol/L", when=at(hours=1))
    on_time, _ = run("type2-diabetes", [(reading, 3600)], restart=False)
    too_late, _ = run("type2-diabetes", [(reading, 3600 + TOLERANCE_S + 1)], restart=False)
    assert on_time
    assert not too_late
    assert timedelta(seconds=TOLERANCE_S) == SHIPPED["type2-diabetes"].out_of_order_tolerance
