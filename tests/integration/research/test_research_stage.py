"""Research streams on the real broker: consent per study, pseudonyms per study, no identifier
in the output, and a retraction when a patient withdraws."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest

from caremesh.consent.model import ActorRef
from tests.support.kafka import Namespace, Proc, free_port, worker_ready
from tests.unit.consent.consent_builders import provision, r4_consent, withdrawal

pytestmark = pytest.mark.kafka

INS = "urn:oid:1.2.250.1.213.1.4.8"
STUDIES = json.dumps(
    [
        {"id": "study-a", "purpose": "HRESCH", "consent_default": "deny"},
        {"id": "study-b", "purpose": "PUBHLTH", "consent_default": "permit"},
    ]
)


def _patient(ins: str, family: str) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "id": f"local-{ins[-4:]}",
        "identifier": [{"system": INS, "value": ins}],
        "name": [{"family": family, "given": ["Synthia"]}],
        "birthDate": "1961-07-14",
        "telecom": [{"system": "phone", "value": "+33 9 99 99 99 99"}],
        "address": [{"line": ["3 allee Synthese"], "city": "Synthville", "postalCode": "99123"}],
    }


def _obs(ins: str, n: int) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"obs-{ins[-4:]}-{n}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "subject": {"identifier": {"system": INS, "value": ins}},
        "effectiveDateTime": "2026-03-02T10:00:00+01:00",
        "valueQuantity": {
            "value": 9.4,
            "unit": "%",
            "system": "http://unitsofmeasure.org",
            "code": "%",
        },
    }


def test_studies_get_consented_pseudonymised_records_and_retractions(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    opted_in, silent = "2990175000001", "2990175000002"
    consent = r4_consent(
        "c-research",
        provision(
            "permit", purposes=["HRESCH"], actors=[ActorRef(reference="ResearchStudy/study-a")]
        ),
    )
    consent["patient"] = {"identifier": {"system": INS, "value": opted_in}}
    namespace.produce("consent.events.v1", [(opted_in.encode(), orjson.dumps(consent), [])])

    port = free_port()
    worker = spawn(
        "worker",
        ["worker", "--stage", "research"],
        namespace.env(
            CAREMESH_WORKER__WEB_PORT=str(port),
            CAREMESH_STUDIES=STUDIES,
            CAREMESH_PSEUDONYM__MASTER_KEY=secrets.token_hex(32),
        ),
    )
    worker_ready(worker, port)
    records = []
    for ins, family in ((opted_in, "Synthonnet"), (silent, "Fictivier")):
        records.append((ins.encode(), orjson.dumps(_patient(ins, family)), []))
        records.append((ins.encode(), orjson.dumps(_obs(ins, 1)), []))
    namespace.produce("clinical.fhir.v1", records)

    study_a = namespace.consume("research.study-a.v1", 2)
    study_b = namespace.consume("research.study-b.v1", 4)
    assert len(study_a) == 2  # opt-in study: only the patient who opted in
    assert len(namespace.consume_all("research.study-a.v1", settle=3)) == 2
    assert len(study_b) == 4  # opt-out study: both patients
    for msg in study_a + study_b:
        text = msg.value().decode() + repr(msg.headers())
        for secret in (
            opted_in,
            silent,
            "Synthonnet",
            "Fictivier",
            "Synthia",
            "99123",
            "3 allee Synthese",
            "+33 9 99 99 99 99",
            "1961-07-14",
        ):
            assert secret not in text
        assert len(msg.key()) == 64
    pseudonym_a = {m.key() for m in study_a}
    assert len(pseudonym_a) == 1
    assert pseudonym_a.isdisjoint({m.key() for m in study_b})  # unlinkable across studies
    patient_b = [
        orjson.loads(m.value())
        for m in study_b
        if orjson.loads(m.value())["resourceType"] == "Patient"
    ]
    assert {p["address"][0]["postalCode"] for p in patient_b} == {"99"}

    at = datetime.now(UTC).isoformat()
    namespace.produce(
        "consent.events.v1",
        [(opted_in.encode(), orjson.dumps(withdrawal("c-research", at, "HRESCH")), [])],
    )
    after = namespace.consume_all("research.study-a.v1", settle=4)
    retractions = [orjson.loads(m.value()) for m in after if b"retraction" in m.value()]
    assert len(retractions) == 1
    assert retractions[0]["pseudonym"].encode() in pseudonym_a
    # Data arriving after the withdrawal no longer reaches the opt-in study.
    namespace.produce(
        "clinical.fhir.v1", [(opted_in.encode(), orjson.dumps(_obs(opted_in, 2)), [])]
    )
    assert len(namespace.consume("research.study-b.v1", 5)) == 5
    assert len(namespace.consume_all("research.study-a.v1", settle=3)) == 3
