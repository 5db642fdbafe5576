"""Re-identification on the real broker: the research stage seals vault records, the consent
API's `POST /ResearchStudy/{study}/$reidentify` resolves a pseudonym for a re-identifier only,
audits every disclosure, and after an erasure cannot resolve it any more."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from caremesh import topics
from caremesh.audit.events import PATIENT_KEY_SYSTEM, REIDENTIFIER_SYSTEM
from caremesh.connectors.consent_api import create_app
from caremesh.kafka.io import AsyncProducer
from caremesh.metrics import Metrics
from caremesh.settings import Settings, StudySettings
from caremesh.tables.consent_ledger import ConsentLedger
from tests.integration.consent.servers import serve
from tests.support.kafka import Namespace, Proc, free_port, worker_ready
from tests.support.settings import evolve
from tests.unit.consent.consent_builders import INS

pytestmark = pytest.mark.kafka

ADMIN = {"Authorization": "Bearer tok-synth-admin-41c2"}
REID = {"Authorization": "Bearer tok-synth-reid-9e07"}
MASTER = secrets.token_hex(32)
PATIENT, OTHER = "2990175000021", "2990175000022"
STUDY = {"id": "study-b", "purpose": "PUBHLTH", "consent_default": "permit"}


def _settings(ns: Namespace) -> Settings:
    settings = Settings()
    settings = evolve(
        settings,
        kafka__bootstrap_servers=ns.kafka,
        kafka__topic_prefix=ns.prefix,
        kafka__partitions=ns.partitions,
        consent_api__admins={"alice": SecretStr(ADMIN["Authorization"][7:])},
        consent_api__reidentifiers={"rita": SecretStr(REID["Authorization"][7:])},
        pseudonym__master_key=SecretStr(MASTER),
        studies=[StudySettings(**STUDY)],
    )
    return settings


@pytest.fixture
def api_url(namespace: Namespace) -> Iterator[str]:
    producer = AsyncProducer(namespace.kafka)
    ledger = ConsentLedger(namespace.kafka, namespace.topic(topics.CONSENT_EVENTS))
    with serve(create_app(_settings(namespace), producer, ledger, Metrics())) as url:
        yield url
    producer.close(timeout=10)


def _obs(ins: str) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"obs-{ins[-4:]}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "subject": {"identifier": {"system": INS, "value": ins}},
        "valueQuantity": {"value": 9.4, "unit": "%"},
    }


def _disclosures(ns: Namespace) -> list[dict[str, Any]]:
    audits = [orjson.loads(m.value()) for m in ns.consume_all(topics.AUDIT, settle=2)]
    return [
        a for a in audits if any(s.get("code") == "reidentification" for s in a.get("subtype", []))
    ]


def test_reidentification_is_role_gated_audited_and_impossible_after_erasure(
    namespace: Namespace, spawn: Callable[..., Proc], api_url: str
) -> None:
    port = free_port()
    worker = spawn(
        "worker",
        ["worker", "--stage", "research"],
        namespace.env(
            CAREMESH_WORKER__WEB_PORT=str(port),
            CAREMESH_STUDIES=json.dumps([STUDY]),
            CAREMESH_PSEUDONYM__MASTER_KEY=MASTER,
        ),
    )
    worker_ready(worker, port)
    namespace.produce(
        "clinical.fhir.v1",
        [(ins.encode(), orjson.dumps(_obs(ins)), []) for ins in (PATIENT, OTHER)],
    )
    records = namespace.consume("research.study-b.v1", 2)
    by_subject = {orjson.loads(m.value())["id"]: m.key().decode() for m in records}
    assert len(by_subject) == 2
    # the vault holds one sealed record per patient, keyed by the patient key, values opaque
    vault = namespace.consume(topics.KEYS_PATIENT, 2, timeout=30)
    assert sorted(m.key() for m in vault) == sorted([PATIENT.encode(), OTHER.encode()])
    for msg in vault:
        assert msg.key() not in msg.value()
        assert not any(p.encode() in msg.value() for p in by_subject.values())

    url = f"{api_url}/ResearchStudy/study-b/$reidentify"
    # which pseudonym is whose is exactly what only the route can tell
    found: dict[str, str] = {}
    for pseud in by_subject.values():
        body = {"pseudonym": pseud, "reason": "incidental finding, ethics ref SYN-7"}
        assert httpx.post(url, json=body).status_code == 401
        assert httpx.post(url, json=body, headers=ADMIN).status_code == 403
        answer = httpx.post(url, json=body, headers=REID)
        assert answer.status_code == 200, answer.text
        assert answer.json()["pseudonym"] == pseud
        found[answer.json()["patient"]] = pseud
    assert set(found) == {PATIENT, OTHER}
    pseudonym = found[PATIENT]
    good = {"pseudonym": pseudonym, "reason": "incidental finding, ethics ref SYN-7"}
    for bad, status in (
        ({"pseudonym": pseudonym}, 400),
        ({"pseudonym": pseudonym.upper(), "reason": "x"}, 400),
        ({"pseudonym": "0" * 64, "reason": "x"}, 404),
    ):
        assert httpx.post(url, json=bad, headers=REID).status_code == status
    other_study = f"{api_url}/ResearchStudy/study-a/$reidentify"
    assert httpx.post(other_study, json=good, headers=REID).status_code == 404

    audits = _disclosures(namespace)
    assert len(audits) == 2  # only the two disclosures; refusals disclosed nothing
    mine = next(a for a in audits if a["entity"][0]["what"]["identifier"]["value"] == PATIENT)
    assert mine["entity"][0]["what"]["identifier"]["system"] == PATIENT_KEY_SYSTEM
    assert mine["agent"][0]["who"]["identifier"] == {"system": REIDENTIFIER_SYSTEM, "value": "rita"}
    assert mine["purposeOfEvent"] == [{"text": good["reason"]}]
    assert {"type": "study", "valueString": "study-b"} in mine["entity"][1]["detail"]
    assert mine["entity"][1]["what"]["identifier"]["value"] == pseudonym
    assert mine["recorded"]

    erased = httpx.post(f"{api_url}/Patient/$erase", json={"patient": PATIENT}, headers=ADMIN)
    assert erased.status_code == 200, erased.text
    gone = httpx.post(url, json=good, headers=REID)
    assert gone.status_code == 404
    assert pseudonym not in gone.text
    still = httpx.post(url, json={**good, "pseudonym": found[OTHER]}, headers=REID)
    assert (still.status_code, still.json()["patient"]) == (200, OTHER)
    retractions = [
        orjson.loads(m.value())
        for m in namespace.consume("research.study-b.v1", 3)
        if b"retraction" in m.value()
    ]
    assert [(r["pseudonym"], r["reason"]) for r in retractions] == [(pseudonym, "erasure")]
    assert len(_disclosures(namespace)) == 3  # the refused lookup after erasure is no disclosure
