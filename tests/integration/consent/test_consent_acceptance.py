"""Consent acceptance on the real broker with every process real: the ingest API, the consent
API, stream workers, FHIR delivery, and real HTTP servers standing in for the providers."""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime

import httpx
import orjson
import pytest

from caremesh.consent.model import ActorRef
from tests.integration.consent.servers import FhirEndpoint, serve
from tests.support.kafka import Namespace, Proc, free_port, make_namespace, worker_ready
from tests.unit.consent.consent_builders import provision, r4_consent

pytestmark = pytest.mark.kafka

INS = "urn:oid:1.2.250.1.213.1.4.8"
SOURCE_TOKEN = "synthetic-source-token"
ADMIN_TOKEN = "synthetic-admin-token"
ORGS = ("org-a", "org-b", "org-c")


def _ins(p: int) -> str:
    return f"29901752{p:05d}"


def _care_team(p: int, orgs: tuple[str, ...] = ORGS) -> dict[str, object]:
    return {
        "resourceType": "CareTeam",
        "id": f"ct-{p}",
        "status": "active",
        "subject": {"identifier": {"system": INS, "value": _ins(p)}},
        "participant": [{"member": {"reference": f"Organization/{o}"}} for o in orgs],
    }


def _obs(p: int, n: int) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"obs-{p}-{n}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"identifier": {"system": INS, "value": _ins(p)}},
        "effectiveDateTime": "2026-01-02T10:00:00+01:00",
        "valueQuantity": {
            "value": 70 + n,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    }


def _consent(cid: str, p: int, root: dict[str, object]) -> dict[str, object]:
    consent = r4_consent(cid, root)
    consent["patient"] = {"identifier": {"system": INS, "value": _ins(p)}}
    return consent


class Platform:
    """The processes of one test, with clients for the two APIs."""

    def __init__(
        self,
        ns: Namespace,
        spawn: Callable[..., Proc],
        endpoints: dict[str, str],
        workers: int = 1,
        delivery: bool = True,
    ) -> None:
        ingest_port, consent_port, delivery_port = free_port(), free_port(), free_port()
        orgs = [
            {
                "id": o,
                "subscriptions": ["Observation"],
                "fhir_endpoint": endpoints.get(o),
                "token": "synthetic-endpoint-token",
            }
            for o in ORGS
        ]
        self.env = ns.env(
            CAREMESH_ORGANISATIONS=json.dumps(orgs),
            CAREMESH_SOURCES=json.dumps([{"id": "hosp-a", "token": SOURCE_TOKEN}]),
            CAREMESH_CONSENT_API__ADMINS=json.dumps({"admin": ADMIN_TOKEN}),
            CAREMESH_HTTP_INGEST__PORT=str(ingest_port),
            CAREMESH_CONSENT_API__PORT=str(consent_port),
            CAREMESH_DELIVERY__PORT=str(delivery_port),
            CAREMESH_DELIVERY__BACKOFF_BASE_SECONDS="0.2",
            CAREMESH_DELIVERY__BACKOFF_MAX_SECONDS="2",
            CAREMESH_DELIVERY__MAX_ATTEMPTS="100",
        )
        self.procs = [
            spawn(
                "ingest-api",
                ["ingest-api"],
                self.env,
                wait_http=f"http://127.0.0.1:{ingest_port}/health",
            ),
            spawn(
                "consent-api",
                ["consent-api"],
                self.env,
                wait_http=f"http://127.0.0.1:{consent_port}/health",
            ),
        ]
        for _ in range(workers):
            port = free_port()
            worker = spawn(
                "worker",
                ["worker", "--stage", "validate", "--stage", "share"],
                {**self.env, "CAREMESH_WORKER__WEB_PORT": str(port)},
            )
            self.procs.append(worker)
            worker_ready(worker, port)
        if delivery:
            self.procs.append(
                spawn(
                    "deliver",
                    ["deliver"],
                    self.env,
                    wait_http=f"http://127.0.0.1:{delivery_port}/health",
                )
            )
        self.ingest = httpx.Client(
            base_url=f"http://127.0.0.1:{ingest_port}",
            timeout=30,
            headers={
                "Authorization": f"Bearer {SOURCE_TOKEN}",
                "Content-Type": "application/fhir+json",
            },
        )
        self.consent = httpx.Client(
            base_url=f"http://127.0.0.1:{consent_port}",
            timeout=30,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )

    def post(self, resource: dict[str, object]) -> None:
        r = self.ingest.post(
            f"/fhir/{resource['resourceType']}",
            content=orjson.dumps(resource),
            headers={"Idempotency-Key": str(resource["id"])},
        )
        assert r.status_code == 202, r.text

    def put_consent(self, consent: dict[str, object]) -> None:
        r = self.consent.post(
            "/Consent",
            content=orjson.dumps(consent),
            headers={"Content-Type": "application/fhir+json"},
        )
        assert r.status_code == 201, r.text


@pytest.fixture
def endpoints() -> Iterator[tuple[dict[str, FhirEndpoint], dict[str, str]]]:
    """A stand-in FHIR server per organisation, and their base URLs."""
    stand_ins = {o: FhirEndpoint() for o in ORGS}
    with ExitStack() as stack:
        urls = {o: stack.enter_context(serve(e.app())) + "/fhir" for o, e in stand_ins.items()}
        yield stand_ins, urls


Endpoints = tuple[dict[str, FhirEndpoint], dict[str, str]]


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return predicate()


def _event_ids(endpoint: FhirEndpoint) -> list[str]:
    return [r.headers.get("x-caremesh-event-id", "") for r in endpoint.accepted()]


def test_refused_org_gets_nothing_others_get_everything_once_even_after_a_30s_outage(
    namespace: Namespace, spawn: Callable[..., Proc], endpoints: Endpoints
) -> None:
    stand_ins, urls = endpoints
    platform = Platform(namespace, spawn, urls)
    platform.put_consent(
        _consent(
            "refuse-c",
            1,
            provision(
                "permit",
                sub=[
                    provision(
                        "deny",
                        actors=[ActorRef(reference="Organization/org-c")],
                        purposes=["TREAT"],
                    )
                ],
            ),
        )
    )
    platform.post(_care_team(1))
    assert len(namespace.consume("clinical.fhir.v1", 1)) == 1
    outage_ends = time.monotonic() + 30
    stand_ins["org-b"].unavailable_until = outage_ends
    for n in range(10):
        platform.post(_obs(1, n))

    # org-a keeps receiving while org-b is down.
    assert _wait(lambda: len(stand_ins["org-a"].accepted()) == 10, 60)
    assert time.monotonic() < outage_ends
    assert stand_ins["org-b"].accepted() == []
    # After the outage org-b has every resource exactly once; org-c (refused) has nothing.
    assert _wait(lambda: len(set(_event_ids(stand_ins["org-b"]))) == 10, 90)
    time.sleep(3)
    assert Counter(_event_ids(stand_ins["org-b"])).most_common(1)[0][1] == 1
    assert len(stand_ins["org-b"].accepted()) == 10
    assert any(r.status == 503 for r in stand_ins["org-b"].all())
    assert stand_ins["org-c"].all() == []

    audits = [orjson.loads(m.value()) for m in namespace.consume_all("audit.v1", settle=4)]
    share = [a for a in audits if a["source"]["observer"]["display"] == "caremesh-share"]
    assert len(share) == 30  # one per decision: 10 observations x 3 care-team organisations
    assert len({a["id"] for a in share}) == 30
    outcome = Counter(
        (next(g for g in a["agent"] if not g.get("requestor"))["who"]["reference"], a["outcome"])
        for a in share
    )
    assert outcome == {
        ("Organization/org-a", "0"): 10,
        ("Organization/org-b", "0"): 10,
        ("Organization/org-c", "8"): 10,
    }


def test_nothing_is_delivered_after_a_withdrawal_is_acknowledged(
    namespace: Namespace, spawn: Callable[..., Proc], endpoints: Endpoints
) -> None:
    stand_ins, urls = endpoints
    platform = Platform(namespace, spawn, urls)
    patients = range(100)
    for p in patients:
        platform.put_consent(
            _consent(
                f"treat-{p}",
                p,
                provision(
                    "permit", purposes=["TREAT"], actors=[ActorRef(reference="Organization/org-a")]
                ),
            )
        )
        platform.post(_care_team(p, ("org-a",)))
    # Care teams first: separate messages may be validated in any order across partitions.
    assert len(namespace.consume("clinical.fhir.v1", 100, timeout=120)) == 100
    for p in patients:
        platform.post(_obs(p, 0))
    assert _wait(lambda: len(stand_ins["org-a"].accepted()) == 100, 120)

    acked: dict[str, float] = {}
    for p in patients:
        r = platform.consent.post(
            f"/Consent/treat-{p}/$withdraw", json={"patient": _ins(p), "purpose": "TREAT"}
        )
        assert r.status_code == 200, r.text
        acked[_ins(p)] = time.time()
        platform.post(_obs(p, 1))  # sent after the acknowledgement: must never be delivered
    assert _wait(lambda: len(_deny_times(namespace)) >= 100, 120)
    time.sleep(3)
    after = [
        r
        for r in stand_ins["org-a"].accepted()
        if orjson.loads(r.body).get("id", "").endswith("-1")
    ]
    assert after == []

    # Effect latency: acknowledgement of the withdrawal → the share stage's deny decision on the
    # first resource that followed it.
    denies = _deny_times(namespace)
    latencies = sorted(denies[k] - acked[k] for k in acked)
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"\nwithdrawal effect latency over {len(latencies)} withdrawals: "
        f"p50={p50 * 1000:.0f} ms p99={p99 * 1000:.0f} ms"
    )
    assert all(lat >= 0 for lat in latencies)


def _deny_times(namespace: Namespace) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in namespace.consume_all("audit.v1", settle=2):
        a = orjson.loads(m.value())
        if a["source"]["observer"]["display"] != "caremesh-share" or a["outcome"] == "0":
            continue
        patient = next(e for e in a["entity"] if e["what"].get("identifier"))["what"]["identifier"][
            "value"
        ]
        at = datetime.fromisoformat(a["recorded"]).timestamp()
        out[patient] = min(at, out.get(patient, at))
    return out


def _outbox_contents(namespace: Namespace) -> set[tuple[str, str, bytes]]:
    out = set()
    for org in ORGS:
        for m in namespace.consume_all(f"outbox.{org}.v1", settle=3):
            out.add((org, orjson.loads(m.value())["id"], m.key()))
    return out


def test_two_workers_give_the_same_deliveries_as_one(
    namespace: Namespace, spawn: Callable[..., Proc], kafka: str
) -> None:
    def feed(platform: Platform, ns: Namespace) -> None:
        for p in range(12):
            if p % 3 == 0:
                platform.put_consent(
                    _consent(
                        f"refuse-{p}",
                        p,
                        provision(
                            "permit",
                            sub=[
                                provision(
                                    "deny",
                                    purposes=["TREAT"],
                                    actors=[ActorRef(reference=f"Organization/{ORGS[p % 3 + 1]}")],
                                )
                            ],
                        ),
                    )
                )
            platform.post(_care_team(p))
        assert len(ns.consume("clinical.fhir.v1", 12)) == 12
        for p in range(12):
            for n in range(5):
                platform.post(_obs(p, n))

    one = Platform(namespace, spawn, {}, workers=1, delivery=False)
    feed(one, namespace)
    with make_namespace(kafka) as other:
        two = Platform(other, spawn, {}, workers=2, delivery=False)
        feed(two, other)
        time.sleep(5)
        expected = _outbox_contents(namespace)
        got = _outbox_contents(other)
    assert len(expected) == 12 * 5 * 3 - 4 * 5
    assert got == expected
