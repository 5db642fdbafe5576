"""Patient context on alert cards, from clinical.fhir.v1, only where consent permits TREAT."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from caremesh import envelope
from caremesh.consent.model import ActorRef
from caremesh.envelope import Envelope
from tests.integration.inbox.support import alert, listed, login, produce_alerts, start_inbox
from tests.support.kafka import Namespace, Proc
from tests.unit.consent.consent_builders import provision, r4_consent

pytestmark = pytest.mark.kafka

INS = "urn:oid:1.2.250.1.213.1.4.8"
CONSENTING = "2850675123456"
REFUSING = "1940475222333"


def _patient(key: str, family: str, phone: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"p-{key}",
        "identifier": [{"system": INS, "value": key}],
        "name": [{"use": "official", "family": family, "given": ["Jeanne"]}],
        "gender": "female",
        "birthDate": "1948-03-06",
        "telecom": [{"system": "phone", "value": phone}],
    }


def _care_team(key: str) -> dict[str, Any]:
    return {
        "resourceType": "CareTeam",
        "id": f"ct-{key}",
        "subject": {"identifier": {"system": INS, "value": key}},
        "participant": [
            {"member": {"reference": "Organization/org-a"}},
            {"member": {"reference": "Organization/org-b"}},
        ],
    }


def _clinical(ns: Namespace, key: str, resources: list[dict[str, Any]]) -> None:
    records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
    for resource in resources:
        env = Envelope(
            f"{resource['id']}-msg",
            "urn:caremesh:source:hosp-a",
            envelope.fhir_event_type(resource["resourceType"]),
        )
        headers = [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]
        records.append((key.encode(), orjson.dumps(resource), headers))
    ns.produce("clinical.fhir.v1", records)


def test_the_card_names_a_consenting_patient_and_withholds_a_refusing_one(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    _clinical(
        namespace,
        CONSENTING,
        [_patient(CONSENTING, "Muller", "+33 3 88 11 22 33"), _care_team(CONSENTING)],
    )
    _clinical(
        namespace,
        REFUSING,
        [_patient(REFUSING, "Schaeffer", "+33 3 88 99 88 77"), _care_team(REFUSING)],
    )
    refusal = r4_consent(
        "consent-refuse-a",
        provision(
            "permit",
            sub=[
                provision(
                    "deny", actors=[ActorRef(reference="Organization/org-a")], purposes=["TREAT"]
                )
            ],
        ),
    )
    refusal["patient"] = {"identifier": {"system": INS, "value": REFUSING}}
    namespace.produce("consent.events.v1", [(REFUSING.encode(), orjson.dumps(refusal), [])])
    ok_id, ok_alert = alert("org-a", CONSENTING)
    no_id, no_alert = alert("org-a", REFUSING)
    produce_alerts(namespace, [(CONSENTING, ok_alert), (REFUSING, no_alert)])
    inbox = start_inbox(spawn, namespace)
    alice, _ = login(inbox.url, "alice")

    cards = {a["id"]: a for a in listed(alice)}
    assert cards[ok_id]["context"]["name"] == "Jeanne Muller"
    assert cards[ok_id]["context"]["phone"] == "+33 3 88 11 22 33"
    assert cards[ok_id]["context"]["sex"] == "female"
    assert isinstance(cards[ok_id]["context"]["age"], int)
    assert cards[ok_id]["context"]["care_team"] == ["org-a", "org-b"]
    assert cards[no_id]["context"] == {"withheld": "consent"}
    body = alice.get("/api/alerts").text
    assert "Schaeffer" not in body
    assert "+33 3 88 99 88 77" not in body
    assert "Schaeffer" not in alice.get("/").text

    # Nothing of either patient reaches the logs or the metrics.
    log = inbox.proc.log()
    metrics = alice.get("/metrics").text
    for value in ("Muller", "Schaeffer", "+33 3 88 11 22 33", CONSENTING, REFUSING):
        assert value not in log
        assert value not in metrics
    decisions = 'caremesh_consent_decisions_total{component="inbox",outcome="%s",purpose="TREAT"}'
    assert decisions % "deny" in metrics
    assert decisions % "permit" in metrics
