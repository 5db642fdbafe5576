"""Erasure (GDPR Art. 17) on the real broker: the consent API's `POST /Patient/$erase`, and the
research stage retracting the patient from every study that had them and sending nothing more."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from caremesh import topics
from caremesh.audit.events import CONSENT_ADMIN_SYSTEM, PATIENT_KEY_SYSTEM
from caremesh.cli.research_export import export_study
from caremesh.connectors.consent_api import create_app
from caremesh.consent import parse_event
from caremesh.consent.model import ActorRef, PatientErased
from caremesh.kafka.io import AsyncProducer
from caremesh.metrics import Metrics
from caremesh.research.export import ExportFormat
from caremesh.settings import Settings
from caremesh.tables.consent_ledger import ConsentLedger
from tests.integration.consent.servers import serve
from tests.support.kafka import Namespace, Proc, free_port, worker_ready
from tests.support.settings import evolve
from tests.unit.consent.consent_builders import INS, provision, r4_consent

pytestmark = pytest.mark.kafka

TOKEN = "tok-synth-erasure-5c1e7a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PATIENT = "2990175123456"
OTHER = "1840275999888"


def _settings(ns: Namespace) -> Settings:
    settings = Settings()
    settings = evolve(
        settings,
        kafka__bootstrap_servers=ns.kafka,
        kafka__topic_prefix=ns.prefix,
        kafka__partitions=ns.partitions,
        consent_api__admins={"alice": SecretStr(TOKEN)},
    )
    return settings


@pytest.fixture
def api_url(namespace: Namespace) -> Iterator[str]:
    producer = AsyncProducer(namespace.kafka)
    ledger = ConsentLedger(namespace.kafka, namespace.topic(topics.CONSENT_EVENTS))
    with serve(create_app(_settings(namespace), producer, ledger, Metrics())) as url:
        yield url
    producer.close(timeout=10)


def _treat_permit(cid: str, patient: str) -> dict[str, Any]:
    consent = r4_consent(cid, provision("permit", purposes=["TREAT"]))
    consent["patient"] = {"identifier": {"system": INS, "value": patient}}
    return consent


def test_erase_appends_erasure_tombstones_key_audits_and_denies_everything(
    api_url: str, namespace: Namespace
) -> None:
    for cid, who in (("c-p", PATIENT), ("c-o", OTHER)):
        created = httpx.post(
            f"{api_url}/Consent", content=orjson.dumps(_treat_permit(cid, who)), headers=AUTH
        )
        assert created.status_code == 201, created.text
    before = httpx.get(
        f"{api_url}/decision", params={"patient": PATIENT, "purpose": "TREAT"}, headers=AUTH
    )
    assert before.json()["outcome"] == "permit"

    assert httpx.post(f"{api_url}/Patient/$erase", json={"patient": PATIENT}).status_code == 401
    missing = httpx.post(f"{api_url}/Patient/$erase", json={}, headers=AUTH)
    assert missing.status_code == 400
    erased = httpx.post(f"{api_url}/Patient/$erase", json={"patient": PATIENT}, headers=AUTH)
    assert erased.status_code == 200, erased.text
    answer = erased.json()
    assert answer["erasedAt"] <= answer["acknowledgedAt"]

    ledger = namespace.consume_all(topics.CONSENT_EVENTS)
    mine = [m for m in ledger if m.key() == PATIENT.encode()]
    assert len(mine) == 2
    assert parse_event(orjson.loads(mine[-1].value())) == PatientErased(
        datetime.fromisoformat(answer["erasedAt"])
    )
    [tombstone] = namespace.consume(topics.KEYS_PATIENT, 1, timeout=30)
    assert (tombstone.key(), tombstone.value()) == (PATIENT.encode(), None)
    audits = [orjson.loads(m.value()) for m in namespace.consume_all(topics.AUDIT)]
    [audit] = [a for a in audits if a["action"] == "D"]
    assert audit["entity"][0]["what"]["identifier"] == {
        "system": PATIENT_KEY_SYSTEM,
        "value": PATIENT,
    }
    admins = [a["who"].get("identifier") for a in audit["agent"] if a["requestor"]]
    assert admins == [{"system": CONSENT_ADMIN_SYSTEM, "value": "alice"}]

    # read-your-writes: every purpose is denied for the erased patient, the other is untouched
    for purpose in ("TREAT", "ETREAT", "HRESCH", "PUBHLTH"):
        decision = httpx.get(
            f"{api_url}/decision", params={"patient": PATIENT, "purpose": purpose}, headers=AUTH
        ).json()
        assert (decision["outcome"], decision["rule"]) == ("deny", "erased")
    other = httpx.get(
        f"{api_url}/decision", params={"patient": OTHER, "purpose": "TREAT"}, headers=AUTH
    ).json()
    assert other["outcome"] == "permit"
    # a consent recorded after the erasure does not bring the patient back
    again = httpx.post(
        f"{api_url}/Consent", content=orjson.dumps(_treat_permit("c-p2", PATIENT)), headers=AUTH
    )
    assert again.status_code == 201
    still = httpx.get(
        f"{api_url}/decision", params={"patient": PATIENT, "purpose": "TREAT"}, headers=AUTH
    ).json()
    assert (still["outcome"], still["rule"]) == ("deny", "erased")


STUDIES = json.dumps(
    [
        {"id": "study-a", "purpose": "HRESCH", "consent_default": "deny"},
        {"id": "study-b", "purpose": "PUBHLTH", "consent_default": "permit"},
    ]
)


def _obs(ins: str, n: int) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"obs-{ins[-4:]}-{n}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "subject": {"identifier": {"system": INS, "value": ins}},
        "effectiveDateTime": "2026-03-02T10:00:00+01:00",
        "valueQuantity": {"value": 9.4, "unit": "%"},
    }


def _retractions(msgs: list[Any]) -> list[dict[str, Any]]:
    return [
        body
        for body in (orjson.loads(m.value()) for m in msgs)
        if body.get("caremeshEvent") == "retraction"
    ]


def _kind(record: dict[str, Any]) -> str:
    return str(record.get("caremeshEvent") or record["resourceType"])


def _by_pseudonym(msgs: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """Records per key, in partition (so per-pseudonym) order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for msg in msgs:
        out.setdefault(msg.key().decode(), []).append(orjson.loads(msg.value()))
    return out


def test_research_stage_retracts_an_erased_patient_from_every_study(
    namespace: Namespace, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    erased, kept = "2990175000011", "2990175000012"
    consent = r4_consent(
        "c-research",
        provision(
            "permit", purposes=["HRESCH"], actors=[ActorRef(reference="ResearchStudy/study-a")]
        ),
    )
    consent["patient"] = {"identifier": {"system": INS, "value": erased}}
    namespace.produce("consent.events.v1", [(erased.encode(), orjson.dumps(consent), [])])
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
    namespace.produce(
        "clinical.fhir.v1",
        [(ins.encode(), orjson.dumps(_obs(ins, 1)), []) for ins in (erased, kept)],
    )
    study_a = namespace.consume("research.study-a.v1", 1)
    study_b = namespace.consume("research.study-b.v1", 2)
    assert len(study_a) == 1  # opt-in study: only the consenting patient
    assert len(study_b) == 2  # opt-out study: both
    erased_pseudonyms = {"study-a": study_a[0].key().decode()}

    at = datetime.now(UTC).isoformat()
    erasure = {"caremeshEvent": "erasure", "at": at}
    namespace.produce("consent.events.v1", [(erased.encode(), orjson.dumps(erasure), [])])
    got_a = _retractions(namespace.consume("research.study-a.v1", 2))
    got_b = _retractions(namespace.consume("research.study-b.v1", 3))
    assert [(r["study"], r["reason"]) for r in got_a] == [("study-a", "erasure")]
    assert [(r["study"], r["reason"]) for r in got_b] == [("study-b", "erasure")]
    assert got_a[0]["pseudonym"] == erased_pseudonyms["study-a"]
    kept_b = {m.key().decode() for m in study_b} - {got_b[0]["pseudonym"]}
    assert len(kept_b) == 1  # the retraction names the erased patient's study-b pseudonym only

    # After the erasure: nothing more for the erased patient, the other patient still flows.
    namespace.produce(
        "clinical.fhir.v1",
        [(ins.encode(), orjson.dumps(_obs(ins, 2)), []) for ins in (erased, kept)],
    )
    assert len(namespace.consume("research.study-b.v1", 4)) == 4  # the other patient's record
    final_a = _by_pseudonym(namespace.consume_all("research.study-a.v1", settle=3))
    final_b = _by_pseudonym(namespace.consume_all("research.study-b.v1", settle=3))
    assert [_kind(r) for r in final_a[erased_pseudonyms["study-a"]]] == [
        "Observation",
        "retraction",
    ]
    assert [_kind(r) for r in final_b[got_b[0]["pseudonym"]]] == [
        "Observation",
        "retraction",
    ]
    assert [_kind(r) for r in final_b[kept_b.pop()]] == ["Observation", "Observation"]
    assert len(final_a) == 1
    assert len(final_b) == 2

    # The researcher's export of study-b no longer holds the erased patient.
    summary = export_study(
        _settings(namespace).kafka,
        "study-b",
        ExportFormat.NDJSON,
        tmp_path / "b.ndjson",
        progress=False,
    )
    assert (summary.records, summary.pseudonyms, summary.retracted) == (2, 1, 1)
    exported = (tmp_path / "b.ndjson").read_bytes()
    assert got_b[0]["pseudonym"].encode() not in exported
    assert erased.encode() not in exported
