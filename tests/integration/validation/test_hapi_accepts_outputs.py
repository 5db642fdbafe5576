"""HAPI FHIR's validator (R4) finds no error in what caremesh's producers make for recipients.

The corpus is the demo's synthetic territory: every FHIR resource its sources send (load
Bundles' entries, Observations, Encounters), every HL7 v2 message mapped to FHIR, the pathway
alerts (Communication) and the AuditEvents of deliveries. A first step towards the same check on
the organisation outboxes read from a running broker (issue 26, acceptance "0 errors").
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from caremesh.audit.events import delivery_audit_event
from caremesh.consent.model import ActorRef
from caremesh.demo.scenario import territory_events
from caremesh.demo.territory import Territory
from caremesh.fhir.hl7v2_map import map_hl7v2
from caremesh.pathways.alert import build_communication
from caremesh.pathways.state import AlertCandidate
from tests.support.hapi import Hapi

START = datetime(2026, 11, 1, tzinfo=UTC)
NOT_DELIVERED = {"Consent"}
"""Consents go to the consent service, never to a recipient."""


def _resources(payload: Any) -> list[dict[str, Any]]:
    if payload.get("resourceType") == "Bundle":
        return [e["resource"] for e in payload.get("entry", []) if "resource" in e]
    return [payload]


def demo_corpus(patients: int = 12) -> list[dict[str, Any]]:
    """One resource of each (type, event kind) the demo territory produces, as sent."""
    seen: set[tuple[str, str]] = set()
    out: list[dict[str, Any]] = []
    for event in territory_events(Territory.generate(7, patients=patients), START, 1000.0):
        if event.channel == "mllp":
            try:
                payload = map_hl7v2(event.payload)
            except Exception:  # noqa: BLE001 - refused at ingest (AR): nothing to deliver
                continue
        else:
            payload = orjson.loads(event.payload)
        for resource in _resources(payload):
            kind = (resource["resourceType"], event.kind)
            if resource["resourceType"] in NOT_DELIVERED or kind in seen:
                continue
            seen.add(kind)
            out.append(resource)
    return out


def alert() -> dict[str, Any]:
    candidate = AlertCandidate(
        alert_id="a1b2c3d4-0000-4000-8000-000000000001",
        key="k-synth",
        sequence=1,
        patient_key="2990175123456",
        pathway_id="heart-failure",
        pathway_version="1",
        coordinator="Organization/org-synth",
        rule_id="weight-gain",
        kind="alert",
        severity="high",
        title="Weight gain",
        text="Synthetic alert text",
        episode="EpisodeOfCare/ep-synth",
        about=("Observation/obs-synth-1",),
        occurred_at=1_790_000_000,
        raised_at=1_790_000_100,
    )
    return build_communication(candidate)


def audit_events() -> list[dict[str, Any]]:
    common: dict[str, Any] = {
        "patient": "2990175123456",
        "recipient": ActorRef(reference="Organization/org-synth"),
        "purpose": "TREAT",
        "message_id": "b1b2c3d4-0000-4000-8000-000000000002",
        "resource": "Observation/obs-synth-1",
        "consent_ids": ["c-synth-1"],
        "event_id": "c1b2c3d4-0000-4000-8000-000000000003",
        "recorded": START,
        "observer": "caremesh-delivery",
    }
    return [
        delivery_audit_event(**common, error_code=None),
        delivery_audit_event(**common | {"resource": None}, error_code="http-422"),
    ]


def test_the_corpus_covers_what_recipients_receive() -> None:
    types = Counter(r["resourceType"] for r in demo_corpus())
    assert {"Patient", "Encounter", "Observation", "Condition", "CareTeam"} <= set(types)


@pytest.mark.parametrize(
    "make",
    [demo_corpus, lambda: [alert()], audit_events],
    ids=["demo-territory", "pathway-alert", "audit-events"],
)
def test_hapi_finds_no_error(hapi_r4: Hapi, make: Any) -> None:
    found = {
        f"{r['resourceType']} ({r.get('id')})": errs
        for r in make()
        if (errs := hapi_r4.validate(r))
    }
    assert found == {}
