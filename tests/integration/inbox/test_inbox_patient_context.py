"""Patient context on alert cards, from clinical.fhir.v1, only where consent permits TREAT."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from tests.integration.inbox.support import (
    alert,
    care_team_resource,
    listed,
    login,
    patient_resource,
    produce_alerts,
    produce_clinical,
    refuse_treat,
    start_inbox,
)
from tests.support.kafka import Namespace, Proc

pytestmark = pytest.mark.kafka

CONSENTING = "2850675123456"
REFUSING = "1940475222333"


def test_the_card_names_a_consenting_patient_and_withholds_a_refusing_one(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    produce_clinical(
        namespace,
        CONSENTING,
        [
            patient_resource(CONSENTING, "Muller", "+33 3 88 11 22 33"),
            care_team_resource(CONSENTING),
        ],
    )
    produce_clinical(
        namespace,
        REFUSING,
        [
            patient_resource(REFUSING, "Schaeffer", "+33 3 88 99 88 77"),
            care_team_resource(REFUSING),
        ],
    )
    refuse_treat(namespace, REFUSING, "org-a")
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
    # Each decision is audited once, however often the list is read.
    listed(alice)
    decisions_audited = [
        orjson.loads(r.value() or b"") for r in namespace.consume_all("audit.v1", settle=2)
    ]
    assert len(decisions_audited) == 2
    assert sorted(e["outcome"] for e in decisions_audited) == ["0", "8"]
    assert {e["subtype"][0]["code"] for e in decisions_audited} == {"AuthZ-Consent"}
    decisions = 'caremesh_consent_decisions_total{component="inbox",outcome="%s",purpose="TREAT"}'
    assert decisions % "deny" in metrics
    assert decisions % "permit" in metrics


def test_a_refusal_written_after_start_up_withholds_the_context_from_the_next_answer(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    produce_clinical(
        namespace,
        CONSENTING,
        [patient_resource(CONSENTING, "Muller", "+33 3 88 11 22 33")],
    )
    alert_id, communication = alert("org-a", CONSENTING)
    produce_alerts(namespace, [(CONSENTING, communication)])
    inbox = start_inbox(spawn, namespace)
    alice, _ = login(inbox.url, "alice")
    bob, _ = login(inbox.url, "bob")
    assert {a["id"]: a for a in listed(alice)}[alert_id]["context"]["name"] == "Jeanne Muller"
    assert "Muller" not in bob.get("/api/alerts").text  # not bob's organisation's alert

    refuse_treat(namespace, CONSENTING, "org-a")
    after = {a["id"]: a for a in listed(alice)}[alert_id]
    assert after["context"] == {"withheld": "consent"}
    assert "Muller" not in alice.get("/api/alerts").text
