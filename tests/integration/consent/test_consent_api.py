"""The consent API against the real broker and a real uvicorn server: writes, reads, decisions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from caremesh import topics
from caremesh.audit.events import CONSENT_ADMIN_SYSTEM, PATIENT_KEY_SYSTEM
from caremesh.connectors.consent_api import create_app
from caremesh.consent import parse_event
from caremesh.kafka.io import AsyncProducer
from caremesh.metrics import Metrics
from caremesh.settings import Settings
from caremesh.tables.consent_ledger import ConsentLedger
from tests.integration.consent.servers import serve
from tests.support.kafka import Namespace, free_port
from tests.support.settings import evolve
from tests.unit.consent.consent_builders import INS, provision, r4_consent, r5_consent

pytestmark = pytest.mark.kafka

TOKEN = "tok-synth-admin-7d41c0"
OTHER_TOKEN = "tok-synth-clerk-1b9e22"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}
PATIENT = "2990175123456"  # the synthetic INS of consent_builders
OTHER_PATIENT = "1840275999888"


@dataclass
class Api:
    url: str
    ns: Namespace
    metrics: Metrics

    def post(self, path: str, body: object, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, content=orjson.dumps(body), headers=AUTH, **kw)

    def get(self, path: str, **params: str) -> httpx.Response:
        return httpx.get(self.url + path, params=params, headers=AUTH, timeout=30)


@pytest.fixture
def api(namespace: Namespace) -> Iterator[Api]:
    settings = Settings()
    settings = evolve(
        settings,
        kafka__bootstrap_servers=namespace.kafka,
        kafka__topic_prefix=namespace.prefix,
        kafka__partitions=namespace.partitions,
        consent_api__admins={"alice": SecretStr(TOKEN), "bob": SecretStr(OTHER_TOKEN)},
    )
    producer = AsyncProducer(namespace.kafka)
    ledger = ConsentLedger(namespace.kafka, namespace.topic(topics.CONSENT_EVENTS))
    metrics = Metrics()
    with serve(create_app(settings, producer, ledger, metrics)) as url:
        yield Api(url, namespace, metrics)
    producer.close(timeout=10)


def _for_patient(patient: str, body: dict[str, Any]) -> dict[str, Any]:
    out = dict(body)
    out["patient"] = {"identifier": {"system": INS, "value": patient}}
    return out


def _treat_permit(cid: str, patient: str = PATIENT, recorded: str | None = None) -> dict[str, Any]:
    consent = r4_consent(cid, provision("permit", purposes=["TREAT"]), recorded=recorded)
    return _for_patient(patient, consent)


def _audit_events(ns: Namespace, expected: int) -> list[dict[str, Any]]:
    return [orjson.loads(m.value()) for m in ns.consume(topics.AUDIT, expected, timeout=30)]


def test_create_list_decide_withdraw_reconsent_round_trip(api: Api) -> None:
    created = api.post("/Consent", _treat_permit("c-treat"))
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "c-treat"
    assert created.headers["location"] == "Consent/c-treat"

    [record] = api.ns.consume(topics.CONSENT_EVENTS, 1, timeout=30)
    assert record.key() == PATIENT.encode()
    written = orjson.loads(record.value())
    assert written["id"] == "c-treat"
    assert parse_event(written).consent.id == "c-treat"  # type: ignore[union-attr]

    listed = api.get("/Consent", patient=PATIENT).json()
    assert [c["id"] for c in listed["consents"]] == ["c-treat"]
    assert listed["consents"][0]["purposes"] == ["TREAT"]
    assert api.get("/Consent", patient=OTHER_PATIENT).json() == {"total": 0, "consents": []}

    permit = api.get("/decision", patient=PATIENT, purpose="TREAT", actor="Organization/org-a")
    assert permit.json()["outcome"] == "permit"
    assert permit.json()["consentIds"] == ["c-treat"]

    withdrawn = api.post("/Consent/c-treat/$withdraw", {"patient": PATIENT, "purpose": "TREAT"})
    assert withdrawn.status_code == 200, withdrawn.text
    answer = withdrawn.json()
    assert answer["consentId"] == "c-treat"
    assert answer["at"] <= answer["acknowledgedAt"]

    # read-your-writes: the withdrawal acknowledged above is in force for the very next query
    denied = api.get("/decision", patient=PATIENT, purpose="ETREAT", resourceType="Observation")
    assert (denied.json()["outcome"], denied.json()["rule"]) == ("deny", "withdrawn")
    listed = api.get("/Consent", patient=PATIENT).json()
    assert listed["consents"][0]["withdrawals"] == [{"at": answer["at"], "purpose": "TREAT"}]

    # a newer consent (no dateTime: recorded is the server's meta.lastUpdated) lifts it
    renewed = api.post("/Consent", _treat_permit("c-treat-2"))
    assert renewed.status_code == 201, renewed.text
    again = api.get("/decision", patient=PATIENT, purpose="TREAT").json()
    assert (again["outcome"], again["consentIds"]) == ("permit", ["c-treat-2"])

    audits = _audit_events(api.ns, 6)
    changes = [a for a in audits if a["type"]["code"] == "110110"]
    decisions = [a for a in audits if a["type"]["code"] == "110113"]
    assert len(changes) == 3
    assert len(decisions) == 3
    assert [a["action"] for a in changes] == ["U", "U", "U"]
    for audit in changes:
        patient_entity, consent_entity = audit["entity"]
        assert patient_entity["what"]["identifier"] == {
            "system": PATIENT_KEY_SYSTEM,
            "value": PATIENT,
        }
        assert consent_entity["what"]["reference"] in {"Consent/c-treat", "Consent/c-treat-2"}
        admins = [a["who"].get("identifier") for a in audit["agent"] if a["requestor"]]
        assert admins == [{"system": CONSENT_ADMIN_SYSTEM, "value": "alice"}]
    [withdrawal_audit] = [a for a in changes if "purposeOfEvent" in a]  # audit.v1 is unordered
    assert withdrawal_audit["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    details = {d["type"] for d in withdrawal_audit["entity"][1]["detail"]}
    assert details == {"withdrawal"}
    assert sorted(d["outcomeDesc"] for d in decisions) == [
        "deny: withdrawn",
        "permit: consent-root",
        "permit: consent-root",
    ]


def test_r5_consent_naming_a_local_patient_needs_the_patient_key(api: Api) -> None:
    research = r5_consent("r5-research", "deny", [provision(purposes=["HRESCH"], r5=True)])
    refused = api.post("/Consent", research)
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "patient-key-required"

    key = "synth-hosp/Patient/p-1"
    created = api.post("/Consent", research, params={"patient": key})
    assert created.status_code == 201, created.text
    assert created.json()["release"] == "R5"
    [record] = api.ns.consume(topics.CONSENT_EVENTS, 1, timeout=30)
    assert record.key() == key.encode()
    decision = api.get("/decision", patient=key, purpose="CLINTRCH").json()
    assert (decision["outcome"], decision["rule"]) == ("permit", "consent-provision")


def test_put_appends_a_new_version_that_replaces_the_old(api: Api) -> None:
    assert api.post("/Consent", _treat_permit("c-v", recorded="2024-01-01")).status_code == 201
    objection = _for_patient(
        PATIENT, r4_consent("c-v", provision("deny", purposes=["TREAT"]), recorded="2024-02-01")
    )
    updated = httpx.put(f"{api.url}/Consent/c-v", content=orjson.dumps(objection), headers=AUTH)
    assert updated.status_code == 200, updated.text
    decision = api.get("/decision", patient=PATIENT, purpose="TREAT").json()
    assert (decision["outcome"], decision["consentIds"]) == ("deny", ["c-v"])
    assert len(api.ns.consume_all(topics.CONSENT_EVENTS)) == 2

    mismatch = httpx.put(f"{api.url}/Consent/other", content=orjson.dumps(objection), headers=AUTH)
    assert mismatch.status_code == 400
    assert mismatch.json()["issue"][0]["details"]["coding"][0]["code"] == "id-mismatch"


def test_decisions_without_consent_follow_the_configured_defaults(api: Api) -> None:
    treat = api.get("/decision", patient=PATIENT, purpose="TREAT").json()
    research = api.get("/decision", patient=PATIENT, purpose="HRESCH").json()
    restricted = api.get("/decision", patient=PATIENT, purpose="TREAT", securityLabel="R").json()
    assert (treat["outcome"], treat["rule"]) == ("permit", "no-active-consent")
    assert (research["outcome"], research["rule"]) == ("deny", "no-active-consent")
    assert restricted["outcome"] == "deny"
    bad = api.get("/decision", patient=PATIENT, purpose="NOT-A-PURPOSE")
    assert bad.status_code == 400
    assert bad.json()["issue"][0]["details"]["coding"][0]["code"] == "invalid-purpose"
    for param, value, code in [
        ("resource", "not/a/ref-synth-9", "invalid-resource"),
        ("references", "Task/t1,synth-9", "invalid-references"),
        ("dataDate", "2015-13-09", "invalid-date"),
    ]:
        refused = api.get("/decision", patient=PATIENT, purpose="TREAT", **{param: value})
        assert refused.status_code == 400, param
        assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == code
        assert "synth-9" not in refused.text
        assert "2015-13-09" not in refused.text


def test_withdrawing_a_consent_the_patient_does_not_have_is_404(api: Api) -> None:
    assert api.post("/Consent", _treat_permit("c-own")).status_code == 201
    missing = api.post("/Consent/c-own/$withdraw", {}, params={"patient": OTHER_PATIENT})
    assert missing.status_code == 404
    unknown = api.post("/Consent/nope/$withdraw", {}, params={"patient": PATIENT})
    assert unknown.status_code == 404
    assert len(api.ns.consume_all(topics.CONSENT_EVENTS)) == 1


ROUTES = [
    ("POST", "/Consent", orjson.dumps(_treat_permit("c-x"))),
    ("PUT", "/Consent/c-x", orjson.dumps(_treat_permit("c-x"))),
    ("POST", f"/Consent/c-x/$withdraw?patient={PATIENT}", b""),
    ("GET", f"/Consent?patient={PATIENT}", b""),
    ("GET", f"/decision?patient={PATIENT}&purpose=TREAT", b""),
]


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"]
)
def test_every_route_needs_an_administrator_token(api: Api, authorization: str | None) -> None:
    headers = {"Content-Type": "application/fhir+json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    for method, path, body in ROUTES:
        response = httpx.request(method, api.url + path, content=body, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["resourceType"] == "OperationOutcome"
    assert api.ns.consume_all(topics.CONSENT_EVENTS, settle=2) == []
    assert api.ns.consume_all(topics.AUDIT, settle=1) == []


def test_health_metrics_and_openapi_are_open_and_phi_free(api: Api) -> None:
    assert api.post("/Consent", _treat_permit("c-h")).status_code == 201
    api.get("/decision", patient=PATIENT, purpose="TREAT")
    health = httpx.get(api.url + "/health", timeout=10)
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    metrics = httpx.get(api.url + "/metrics").text
    assert 'caremesh_consent_decisions_total{component="consent_api",outcome="permit"' in metrics
    assert PATIENT not in metrics
    assert "c-h" not in metrics
    spec = httpx.get(api.url + "/openapi.json").json()
    assert {"/Consent", "/Consent/{consent_id}", "/Consent/{consent_id}/$withdraw"} <= set(
        spec["paths"]
    )
    assert "/decision" in spec["paths"]


SECRET = "SYNTH-SECRET-VALUE-42"
BAD = [
    pytest.param(b'{"resourceType": "Consent", ' + SECRET.encode(), 400, "invalid-json", id="json"),
    pytest.param(
        orjson.dumps({"resourceType": "Patient", "id": "x", "name": [{"family": SECRET}]}),
        422,
        "not-a-consent",
        id="not-a-consent",
    ),
    pytest.param(
        orjson.dumps({**_treat_permit("c-bad"), "status": SECRET}),
        422,
        "invalid-code",  # Consent.status has a required binding (fhir/bindings.py)
        id="bad-status",
    ),
    pytest.param(
        orjson.dumps({**_treat_permit("c-bad"), "dateTime": SECRET}),
        422,
        "validation-failed",
        id="bad-date",
    ),
    pytest.param(
        orjson.dumps({**_treat_permit("c-bad"), SECRET: True}),
        422,
        "validation-failed",
        id="unknown-element",
    ),
    pytest.param(
        orjson.dumps(
            _for_patient(
                PATIENT,
                r4_consent(
                    "c-bad",
                    provision(
                        "permit",
                        extra={"purpose": [{"system": "urn:synth:" + SECRET, "code": "TREAT"}]},
                    ),
                ),
            )
        ),
        422,
        "consent-unsupported",
        id="purpose-not-act-reason",
    ),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD)
def test_a_bad_consent_is_refused_without_its_values(
    api: Api, body: bytes, status: int, code: str
) -> None:
    response = httpx.post(api.url + "/Consent", content=body, headers=AUTH)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["details"]["coding"][0]["code"] == code
    assert SECRET not in response.text
    assert PATIENT not in response.text
    assert api.ns.consume_all(topics.CONSENT_EVENTS, settle=2) == []


def test_caremesh_consent_api_command_serves_the_api(namespace: Namespace, spawn: Any) -> None:
    port = free_port()
    env = namespace.env(
        CAREMESH_CONSENT_API__ADMINS=orjson.dumps({"alice": TOKEN}).decode(),
        CAREMESH_CONSENT_API__PORT=str(port),
    )
    url = f"http://127.0.0.1:{port}"
    proc = spawn("consent-api", ["consent-api"], env, wait_http=f"{url}/health")
    created = httpx.post(
        f"{url}/Consent", content=orjson.dumps(_treat_permit("c-cli")), headers=AUTH, timeout=30
    )
    assert created.status_code == 201, proc.log()[-3000:]
    decision = httpx.get(
        f"{url}/decision", params={"patient": PATIENT, "purpose": "TREAT"}, headers=AUTH
    ).json()
    assert decision["consentIds"] == ["c-cli"]
    assert PATIENT not in proc.log()
