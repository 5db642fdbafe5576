"""Care-team sharing end to end on the real broker: clinical records reach the organisations
of the patient's care team that subscribed, only where consent permits, each decision audited."""

from __future__ import annotations

import json
from collections.abc import Callable

import orjson
import pytest

from caremesh import envelope
from caremesh.envelope import Envelope
from caremesh.fhir.recipient_ids import recipient_id
from tests.support.kafka import Namespace, Proc, free_port, worker_ready
from tests.unit.consent.consent_builders import provision, r4_consent

pytestmark = pytest.mark.kafka

INS = "urn:oid:1.2.250.1.213.1.4.8"
PATIENT = "2990175123456"
ORGS = json.dumps(
    [{"id": o, "subscriptions": ["Observation"]} for o in ("org-a", "org-b", "org-c")]
)


def _h(msg_id: str, rtype: str) -> list[tuple[str, bytes]]:
    env = Envelope(msg_id, "urn:caremesh:source:hosp-a", envelope.fhir_event_type(rtype))
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]


def _care_team() -> dict[str, object]:
    return {
        "resourceType": "CareTeam",
        "id": "ct1",
        "status": "active",
        "subject": {"identifier": {"system": INS, "value": PATIENT}},
        "participant": [
            {"member": {"reference": f"Organization/{o}"}} for o in ("org-a", "org-b", "org-c")
        ],
    }


def _obs(i: int) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"obs{i}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"identifier": {"system": INS, "value": PATIENT}},
        "effectiveDateTime": "2026-01-02T10:00:00+01:00",
        "valueQuantity": {
            "value": 70 + i,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    }


def test_care_team_members_receive_what_consent_permits_and_every_decision_is_audited(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    # The patient refuses sharing with org-c for care; org-a and org-b fall under the TREAT default.
    from caremesh.consent.model import ActorRef

    refuse_c = r4_consent(
        "consent-1",
        provision(
            "permit",
            sub=[
                provision(
                    "deny", actors=[ActorRef(reference="Organization/org-c")], purposes=["TREAT"]
                )
            ],
        ),
    )
    refuse_c["patient"] = {"identifier": {"system": INS, "value": PATIENT}}
    namespace.produce("consent.events.v1", [(PATIENT.encode(), orjson.dumps(refuse_c), [])])

    port = free_port()
    worker = spawn(
        "worker",
        ["worker", "--stage", "validate", "--stage", "share"],
        namespace.env(CAREMESH_WORKER__WEB_PORT=str(port), CAREMESH_ORGANISATIONS=ORGS),
    )
    worker_ready(worker, port)
    namespace.produce("ingest.fhir.v1", [(b"ct", orjson.dumps(_care_team()), _h("ct", "CareTeam"))])
    namespace.consume("clinical.fhir.v1", 1)
    namespace.produce(
        "ingest.fhir.v1",
        [(f"o{i}".encode(), orjson.dumps(_obs(i)), _h(f"o{i}", "Observation")) for i in range(5)],
    )

    for org in ("org-a", "org-b"):
        got = namespace.consume(f"outbox.{org}.v1", 5)
        shared = [orjson.loads(m.value()) for m in got]
        assert sorted(r["id"] for r in shared) == sorted(
            recipient_id("hosp-a", "Observation", f"obs{i}") for i in range(5)
        )
        assert sorted(r["identifier"][0]["value"] for r in shared) == [f"obs{i}" for i in range(5)]
        assert {m.key() for m in got} == {PATIENT.encode()}
    assert namespace.consume_all("outbox.org-c.v1", settle=3) == []

    audits = namespace.consume("audit.v1", 15)
    assert len(audits) == 15  # 5 observations x 3 care-team organisations
    outcomes = {}
    for m in audits:
        event = orjson.loads(m.value())
        assert event["resourceType"] == "AuditEvent"
        recipient = next(a for a in event["agent"] if not a.get("requestor"))
        outcomes.setdefault(recipient["who"]["reference"], set()).add(event["outcome"])
    assert outcomes == {
        "Organization/org-a": {"0"},
        "Organization/org-b": {"0"},
        "Organization/org-c": {"8"},
    }
