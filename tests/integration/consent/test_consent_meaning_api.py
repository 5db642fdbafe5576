"""Consents mean what they say, through the real consent API, real workers and the real broker.

A patient of source hosp-a (named `Patient/p1`, no INS) denies everything except one research
study: care organisations get deny for TREAT and nothing on their outboxes, the study still
receives the patient's Observations. A Consent with an element caremesh does not evaluate,
where ignoring it would permit more (a permit scoped by it that holds a nested deny), is refused
with an OperationOutcome naming the element.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from caremesh import envelope, topics
from caremesh.connectors.consent_api import create_app
from caremesh.consent.model import ActorRef
from caremesh.envelope import Envelope
from caremesh.kafka.io import AsyncProducer
from caremesh.metrics import Metrics
from caremesh.settings import Settings, SourceSettings
from caremesh.tables.consent_ledger import ConsentLedger
from tests.integration.consent.servers import serve
from tests.support.kafka import Namespace, Proc, free_port, worker_ready
from tests.support.settings import evolve
from tests.unit.consent.consent_builders import provision, r4_consent, r5_consent

pytestmark = pytest.mark.kafka

SOURCE = "hosp-a"
SOURCE_TOKEN = "tok-synth-source-" + secrets.token_hex(4)
ADMIN_TOKEN = "tok-synth-admin-" + secrets.token_hex(4)
PATIENT_KEY = f"{SOURCE}/Patient/p1"  # what hosp-a's records for Patient/p1 are keyed by
ORGS = json.dumps([{"id": o, "subscriptions": ["Observation"]} for o in ("org-a", "org-b")])
STUDIES = json.dumps([{"id": "study-a", "purpose": "HRESCH", "consent_default": "deny"}])
STUDY = ActorRef(reference="ResearchStudy/study-a")


def _r4_deny_all_but_study() -> dict[str, Any]:
    study = provision("permit", actors=[STUDY], purposes=["HRESCH"], types=["Observation"])
    consent = r4_consent("deny-but-study", provision("deny", sub=[study]))
    consent["patient"] = {"reference": "Patient/p1"}
    return consent


def _r5_deny_all_but_study() -> dict[str, Any]:
    study = provision(actors=[STUDY], purposes=["HRESCH"], types=["Observation"], r5=True)
    consent = r5_consent("deny-but-study", "deny", [study])
    consent["subject"] = {"reference": "Patient/p1"}
    return consent


def _headers(msg_id: str, rtype: str) -> list[tuple[str, bytes]]:
    env = Envelope(msg_id, f"urn:caremesh:source:{SOURCE}", envelope.fhir_event_type(rtype))
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]


def _care_team() -> dict[str, Any]:
    return {
        "resourceType": "CareTeam",
        "id": "ct1",
        "status": "active",
        "subject": {"reference": "Patient/p1"},
        "participant": [{"member": {"reference": f"Organization/{o}"}} for o in ("org-a", "org-b")],
    }


def _obs(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"obs{i}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-01-02T10:00:00+01:00",
        "valueQuantity": {"value": 70 + i, "unit": "kg"},
    }


@pytest.fixture
def consent_api(namespace: Namespace) -> Iterator[str]:
    settings = Settings()
    settings = evolve(
        settings,
        kafka__bootstrap_servers=namespace.kafka,
        kafka__topic_prefix=namespace.prefix,
        kafka__partitions=namespace.partitions,
        worker__app_id=namespace.prefix + "app",
        consent_api__admins={"alice": SecretStr(ADMIN_TOKEN)},
        sources=[SourceSettings(id=SOURCE, token=SecretStr(SOURCE_TOKEN))],
    )
    producer = AsyncProducer(namespace.kafka)
    ledger = ConsentLedger(namespace.kafka, namespace.topic(topics.CONSENT_EVENTS))
    with serve(create_app(settings, producer, ledger, Metrics())) as url:
        yield url
    producer.close(timeout=10)


def _post_as_source(url: str, consent: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {SOURCE_TOKEN}", "Content-Type": "application/fhir+json"}
    return httpx.post(url + "/Consent", content=orjson.dumps(consent), headers=headers, timeout=60)


def _decide(url: str, **params: str) -> dict[str, Any]:
    answer = httpx.get(
        url + "/decision",
        params=params,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=60,
    )
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


@pytest.mark.parametrize(
    "consent",
    [
        pytest.param(_r4_deny_all_but_study(), id="r4"),
        pytest.param(_r5_deny_all_but_study(), id="r5"),
    ],
)
def test_deny_all_but_one_study_denies_care_and_feeds_only_the_study(
    namespace: Namespace, spawn: Callable[..., Proc], consent_api: str, consent: dict[str, Any]
) -> None:
    posted = _post_as_source(consent_api, consent)
    assert posted.status_code == 201, posted.text
    for org in ("Organization/org-a", "Organization/org-b", "Organization/elsewhere"):
        decision = _decide(consent_api, patient=PATIENT_KEY, purpose="TREAT", actor=org)
        assert (decision["outcome"], decision["rule"]) == ("deny", "consent-root")
    study = _decide(
        consent_api,
        patient=PATIENT_KEY,
        purpose="HRESCH",
        actor="ResearchStudy/study-a",
        resourceType="Observation",
    )
    assert study["outcome"] == "permit"

    port = free_port()
    worker = spawn(
        "worker",
        ["worker", "--stage", "validate", "--stage", "share", "--stage", "research"],
        namespace.env(
            CAREMESH_WORKER__WEB_PORT=str(port),
            CAREMESH_ORGANISATIONS=ORGS,
            CAREMESH_STUDIES=STUDIES,
            CAREMESH_PSEUDONYM__MASTER_KEY=secrets.token_hex(32),
        ),
    )
    worker_ready(worker, port)
    namespace.produce(
        "ingest.fhir.v1", [(b"ct", orjson.dumps(_care_team()), _headers("ct", "CareTeam"))]
    )
    namespace.consume("clinical.fhir.v1", 1)
    namespace.produce(
        "ingest.fhir.v1",
        [
            (f"o{i}".encode(), orjson.dumps(_obs(i)), _headers(f"o{i}", "Observation"))
            for i in range(3)
        ],
    )

    clinical = namespace.consume("clinical.fhir.v1", 4)
    assert {m.key() for m in clinical} == {PATIENT_KEY.encode()}  # the consent's key
    received = namespace.consume("research.study-a.v1", 3)
    assert len(received) == 3
    assert {orjson.loads(m.value())["resourceType"] for m in received} == {"Observation"}
    for org in ("org-a", "org-b"):
        assert namespace.consume_all(f"outbox.{org}.v1", settle=4) == []


def test_a_consent_scoped_by_an_unevaluated_element_is_refused_naming_it(consent_api: str) -> None:
    scoped = r5_consent(
        "scoped-by-code",
        "deny",
        [
            provision(
                r5=True,
                extra={"code": [{"coding": [{"code": "synthetic-code-77"}]}]},
                # a deny nested in the unevaluated permit: dropping the permit would drop it too
                sub=[provision(actors=[ActorRef(reference="Organization/org-b")], r5=True)],
            )
        ],
    )
    refused = _post_as_source(consent_api, scoped)
    assert refused.status_code == 422
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    text = json.dumps(outcome)
    assert "Consent.provision[0].code" in text
    assert "synthetic-code-77" not in text
    assert _decide(consent_api, patient=PATIENT_KEY, purpose="TREAT")["rule"] == "no-active-consent"


def test_a_consent_by_reference_takes_the_ins_the_validate_stage_learned(
    namespace: Namespace, spawn: Callable[..., Proc], consent_api: str
) -> None:
    ins = "2990175000077"
    patient = {
        "resourceType": "Patient",
        "id": "p2",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": ins}],
        "name": [{"family": "Synthonnet"}],
    }
    port = free_port()
    worker = spawn(
        "worker",
        ["worker", "--stage", "validate"],
        namespace.env(CAREMESH_WORKER__WEB_PORT=str(port)),
    )
    worker_ready(worker, port)
    namespace.produce("ingest.fhir.v1", [(b"p2", orjson.dumps(patient), _headers("p2", "Patient"))])
    assert [m.key() for m in namespace.consume("clinical.fhir.v1", 1)] == [ins.encode()]

    consent = r5_consent("deny-all", "deny")
    consent["subject"] = {"reference": "Patient/p2"}
    assert _post_as_source(consent_api, consent).status_code == 201
    decision = _decide(consent_api, patient=ins, purpose="TREAT", actor="Organization/org-a")
    assert (decision["outcome"], decision["rule"]) == ("deny", "consent-root")
    unkeyed = _decide(consent_api, patient=f"{SOURCE}/Patient/p2", purpose="TREAT")
    assert unkeyed["rule"] == "no-active-consent"
