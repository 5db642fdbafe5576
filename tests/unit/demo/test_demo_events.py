"""The event stream: deterministic, valid for caremesh's own validators, and alert-worthy."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from caremesh.consent import ActorRef, DecisionQuery, evaluate, parse_consent, parse_event
from caremesh.consent.model import ConsentWithdrawn
from caremesh.demo.scenario import Event, demo_clock, territory_events
from caremesh.demo.territory import Territory
from caremesh.envelope import PatientKey
from caremesh.fhir.hl7v2 import parse_hl7
from caremesh.fhir.hl7v2_map import hl7v2_to_fhir
from caremesh.fhir.ingest import process_ingest
from caremesh.fhir.validate import validate_resource
from caremesh.pathways import PatientPathwayState, load_shipped_pathways
from caremesh.pathways import evaluate as evaluate_pathway
from tests.unit.demo.demo_clock import SPEED, START


def _fhir_bodies(event: Event) -> list[bytes]:
    """The FHIR JSON the validate stage would see for this event."""
    if event.channel == "mllp":
        return [hl7v2_to_fhir(event.payload)]
    if event.channel in ("http-bundle", "http-resource"):
        return [event.payload]
    return []


def test_same_seed_gives_the_same_events() -> None:
    one = list(territory_events(Territory.generate(4, patients=60), START, SPEED))
    two = list(territory_events(Territory.generate(4, patients=60), START, SPEED))
    assert one == two
    later = list(
        territory_events(Territory.generate(4, patients=60), START + timedelta(days=1), SPEED)
    )
    assert [e.kind for e in later] == [e.kind for e in one]
    assert [e.at - timedelta(days=1) for e in later] == [e.at for e in one]


def test_events_are_in_time_order_with_due_offsets(events: list[Event]) -> None:
    assert [e.at for e in events] == sorted(e.at for e in events)
    for event in events:
        assert event.due == pytest.approx((event.at - START).total_seconds() / SPEED)
    assert events[-1].at - START <= timedelta(days=1.5)


def test_every_channel_and_kind_occurs(events: list[Event]) -> None:
    kinds = Counter(e.kind for e in events)
    expected = {
        "load", "consent-objection", "consent-research", "withdraw", "weight", "spo2", "hba1c",
        "glucose", "lab", "admit", "discharge", "ed", "ed-discharge", "visit",
    }  # fmt: skip
    assert expected <= set(kinds)
    assert kinds["load"] == 300
    assert {e.channel for e in events} == {"http-bundle", "http-resource", "mllp", "consent"}


def test_fhir_and_hl7_payloads_pass_the_validate_stage(events: list[Event]) -> None:
    rejected: Counter[tuple[str, str]] = Counter()
    keys: set[str] = set()
    for n, event in enumerate(events):
        if event.channel == "mllp":
            summary = parse_hl7(event.payload)
            assert summary.sending_facility.split("^")[0] == event.source
        for body in _fhir_bodies(event):
            result = process_ingest(body, event.source, f"demo-{n}", "R4", {})
            if result.rejection is not None:
                rejected[(event.kind, result.rejection.code)] += 1
                continue
            assert {r.key_kind for r in result.records} == {"ins"}
            keys.update(r.key for r in result.records)
    assert not rejected
    assert len(keys) == 300


def test_http_payloads_match_their_endpoint(events: list[Event]) -> None:
    for event in events:
        if event.channel == "http-bundle":
            assert orjson.loads(event.payload)["type"] == "transaction"
        elif event.channel == "http-resource":
            assert orjson.loads(event.payload)["resourceType"] == event.resource_type
    assert len({e.idempotency_key for e in events}) == len(events)


def test_consents_parse_validate_and_decide(territory: Territory, events: list[Event]) -> None:
    patients = {p.ins: p for p in territory.patients}
    now = datetime(2026, 1, 1, tzinfo=UTC)
    upserts: dict[str, str] = {}
    for event in (e for e in events if e.channel == "consent"):
        data = orjson.loads(event.payload)
        patient = patients[event.patient]
        if event.kind == "withdraw":
            withdrawal = parse_event(data)
            assert isinstance(withdrawal, ConsentWithdrawn)
            assert upserts[withdrawal.consent_id] == event.patient  # withdraws an earlier one
            assert withdrawal.consent_id == event.consent_id
            assert patient.research == "opt-in"
            continue
        validate_resource(data, "R4")
        consent = parse_consent(data)
        upserts[consent.id] = event.patient
        key = PatientKey(event.patient)
        if event.kind == "consent-objection":
            assert patient.objects_to is not None
            other = next(o for o in patient.care_team if o != patient.objects_to)
            for org, outcome in ((patient.objects_to, "deny"), (other, "permit")):
                query = DecisionQuery(key, "TREAT", now, ActorRef(f"Organization/{org}"))
                assert evaluate([consent], query).outcome == outcome
        else:
            query = DecisionQuery(key, "HRESCH", now)
            expected = "permit" if patient.research == "opt-in" else "deny"
            assert evaluate([consent], query).outcome == expected
    assert len(upserts) == sum(
        (p.objects_to is not None) + (p.research is not None) for p in territory.patients
    )


def test_consents_come_before_the_patient_data(events: list[Event]) -> None:
    loaded: set[str] = set()
    for event in events:
        if event.kind == "load":
            loaded.add(event.patient)
        elif event.kind.startswith("consent-"):
            assert event.patient not in loaded
        else:
            assert event.patient in loaded


def test_event_repr_shows_no_payload_or_identifier(events: list[Event]) -> None:
    event = next(e for e in events if e.kind == "load")
    assert event.patient not in repr(event)
    assert "Patient" not in repr(event)


def test_demo_clock_keeps_clinical_times_within_the_pathway_tolerance() -> None:
    now = datetime(2025, 6, 1, tzinfo=UTC)
    start, speed = demo_clock(now, days=1.5, seconds=600)
    assert speed == pytest.approx(216.0)
    for event in territory_events(Territory.generate(2, patients=100), start, speed, days=1.5):
        arrival = now + timedelta(seconds=event.due)
        assert abs(event.at - arrival) <= timedelta(hours=18)


def test_every_pathway_rule_but_the_14_day_follow_up_fires() -> None:
    """Fed at the pace of `demo_clock`, the shipped pathways raise each kind of alert."""
    pathways = load_shipped_pathways()
    now = datetime(2025, 6, 1, tzinfo=UTC)
    start, speed = demo_clock(now, days=1.5, seconds=600)
    states: dict[tuple[str, str], PatientPathwayState] = {}
    fired: Counter[str] = Counter()
    for n, event in enumerate(territory_events(Territory.generate(11, patients=300), start, speed)):
        arrival = now + timedelta(seconds=event.due)
        for body in _fhir_bodies(event):
            for record in process_ingest(body, event.source, f"m{n}", "R4", {}).records:
                resource = orjson.loads(record.value)
                for pid, pathway in pathways.items():
                    state = states.get((record.key, pid), PatientPathwayState())
                    state, alerts = evaluate_pathway(
                        pathway, state, resource, patient_key=record.key, now=arrival
                    )
                    states[(record.key, pid)] = state
                    fired.update(a.rule_id for a in alerts)
    rules = {rule.id for pathway in pathways.values() for rule in pathway.rules}
    assert set(fired) == rules - {"no-follow-up-14d"}
    assert fired["weight-gain-3d"] >= 5
    assert fired["hba1c-above-9"] >= 5


@pytest.mark.parametrize(("speed", "days"), [(0.0, 1.0), (1.0, 0.0), (-2.0, 1.0)])
def test_events_refuse_bad_clocks(territory: Territory, speed: float, days: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        next(territory_events(territory, START, speed, days=days))


def test_events_refuse_naive_start(territory: Territory) -> None:
    with pytest.raises(ValueError, match="timezone"):
        next(territory_events(territory, datetime(2025, 1, 1), 1.0))
