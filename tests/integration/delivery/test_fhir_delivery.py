"""FHIR delivery against the real broker and real HTTP servers standing in for providers."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from caremesh import envelope, topics
from caremesh.connectors.fhir_delivery import EVENT_ID_HEADER
from caremesh.envelope import Envelope, fhir_event_type, headers_dict
from caremesh.metrics import Metrics
from caremesh.settings import OrganisationSettings, Settings
from tests.integration.consent.servers import FhirEndpoint, serve
from tests.support.delivery import delivering, until
from tests.support.kafka import Namespace, free_port
from tests.support.settings import evolve

pytestmark = pytest.mark.kafka

ORGS = ("org-a", "org-b", "org-c")
PATIENTS = ("2990175123456", "1840275999888", "2750313777666")


@dataclass
class Provider:
    org: str
    endpoint: FhirEndpoint
    url: str
    token: str


@pytest.fixture
def providers() -> Iterator[dict[str, Provider]]:
    with contextlib.ExitStack() as stack:
        out = {}
        for org in ORGS:
            endpoint = FhirEndpoint()
            url = stack.enter_context(serve(endpoint.app(), lifespan="off"))
            out[org] = Provider(org, endpoint, url + "/fhir", f"tok-synth-{org}-{uuid.uuid4().hex}")
        yield out


def _settings(ns: Namespace, providers: dict[str, Provider], **delivery: Any) -> Settings:
    settings = Settings(
        organisations=[
            OrganisationSettings(id=p.org, fhir_endpoint=p.url, token=SecretStr(p.token))
            for p in providers.values()
        ]
    )
    return evolve(
        settings,
        kafka__bootstrap_servers=ns.kafka,
        kafka__topic_prefix=ns.prefix,
        **{f"delivery__{name}": value for name, value in delivery.items()},
    )


def _record(
    patient: str, n: int, *, with_id: bool = True, ce_id: str | None = None
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": f"synthetic {n}"},
        "subject": {"reference": "Patient/p-synth"},
    }
    if with_id:
        resource["id"] = f"obs-{patient[-4:]}-{n}"
    mid = ce_id or str(uuid.uuid4())
    env = Envelope(mid, "urn:caremesh:stage:share", fhir_event_type("Observation"))
    headers = [(k, v if isinstance(v, bytes) else b"") for k, v in env.headers()]
    headers.append((envelope.H_CONSENT_DECISIONS, b"c-treat"))
    return patient.encode(), orjson.dumps(resource), headers


def _ce_ids(endpoint: FhirEndpoint) -> list[str]:
    return [r.headers[EVENT_ID_HEADER.lower()] for r in endpoint.accepted()]


async def test_one_endpoint_down_does_not_stall_the_others_and_recovers_exactly_once(
    namespace: Namespace, providers: dict[str, Provider]
) -> None:
    per_org = 15
    outage = 10.0
    produced: dict[str, list[tuple[bytes, bytes, list[tuple[str, bytes]]]]] = {}
    for org in ORGS:
        records = [_record(PATIENTS[n % 3], n, with_id=n % 5 != 0) for n in range(per_org)]
        duplicate = records[3]  # the same ce_id again (a replay upstream)
        produced[org] = records
        namespace.produce(topics.outbox_topic(org), [*records, duplicate])
    providers["org-b"].endpoint.unavailable_until = time.monotonic() + outage
    settings = _settings(
        namespace,
        providers,
        max_attempts=50,
        backoff_base_seconds=0.1,
        backoff_max_seconds=1.0,
        timeout_seconds=2.0,
    )
    metrics = Metrics()
    started = time.monotonic()
    async with delivering(settings, metrics):
        others_done = await until(
            lambda: all(
                len(providers[o].endpoint.accepted()) >= per_org for o in ("org-a", "org-c")
            ),
            timeout=outage - 2,
        )
        assert others_done, "org-a and org-c must be served while org-b is down"
        assert time.monotonic() - started < outage
        assert providers["org-b"].endpoint.accepted() == []
        assert len(providers["org-b"].endpoint.all()) >= 2  # it was being retried meanwhile
        recovered = await until(
            lambda: len(providers["org-b"].endpoint.accepted()) >= per_org, timeout=outage + 30
        )
        assert recovered
        await asyncio.sleep(2.0)  # nothing more should arrive

    for org in ORGS:
        provider = providers[org]
        expected = [headers_dict(h)[envelope.H_ID] for _, _, h in produced[org]]
        got = _ce_ids(provider.endpoint)
        assert sorted(got) == sorted(expected), org  # every resource, exactly once
        for received in provider.endpoint.accepted():
            assert received.headers["authorization"] == f"Bearer {provider.token}"
            assert received.headers["content-type"] == "application/fhir+json"
            resource = orjson.loads(received.body)
            if "id" in resource:
                assert (received.method, received.path) == ("PUT", f"Observation/{resource['id']}")
            else:
                assert (received.method, received.path) == ("POST", "Observation")
        for patient in PATIENTS:  # per-patient order kept
            order = [
                headers_dict(h)[envelope.H_ID] for k, _, h in produced[org] if k == patient.encode()
            ]
            seen = [
                r.headers[EVENT_ID_HEADER.lower()]
                for r in provider.endpoint.accepted()
                if r.headers[EVENT_ID_HEADER.lower()] in order
            ]
            assert seen == order, (org, patient)

    text = metrics.render().decode()
    for org in ORGS:
        assert (
            f'caremesh_deliveries_total{{organisation="{org}",outcome="delivered"}} {per_org}.0'
            in text
        )
        assert f'caremesh_deliveries_total{{organisation="{org}",outcome="duplicate"}} 1.0' in text
    assert namespace.consume_all(topics.DELIVERY_FAILED, settle=1) == []
    audits = [orjson.loads(m.value()) for m in namespace.consume(topics.AUDIT, 3 * per_org)]
    assert len(audits) == 3 * per_org
    assert {a["type"]["code"] for a in audits} == {"110106"}
    assert {a["outcome"] for a in audits} == {"0"}
    consent_refs = {e.get("what", {}).get("reference") for a in audits for e in a["entity"]}
    assert "Consent/c-treat" in consent_refs


async def test_permanent_and_exhausted_failures_go_to_the_failed_topic(
    namespace: Namespace, providers: dict[str, Provider]
) -> None:
    providers["org-a"].endpoint.status = 400
    providers["org-b"].endpoint.status = 503
    bad_request = _record(PATIENTS[0], 1)
    unavailable = _record(PATIENTS[1], 2, with_id=False)
    namespace.produce(topics.outbox_topic("org-a"), [bad_request])
    namespace.produce(topics.outbox_topic("org-b"), [unavailable])
    namespace.produce(
        topics.outbox_topic("org-c"),
        [(PATIENTS[2].encode(), b"not json at all", [(envelope.H_ID, b"synthetic-bad")])],
    )
    settings = _settings(
        namespace, providers, max_attempts=3, backoff_base_seconds=0.05, backoff_max_seconds=0.2
    )
    async with delivering(settings, Metrics()):
        failed = await asyncio.to_thread(namespace.consume, topics.DELIVERY_FAILED, 3, 60.0)
    by_org = {headers_dict(m.headers())["caremesh-delivery-organisation"]: m for m in failed}
    assert set(by_org) == set(ORGS)

    expectations = {
        "org-a": (bad_request, "http-400", "1"),
        "org-b": (unavailable, "http-503", "3"),
    }
    for org, ((key, value, headers), code, attempts) in expectations.items():
        message = by_org[org]
        found = headers_dict(message.headers())
        assert message.key() == key
        assert message.value() == value
        assert found[envelope.H_ERROR_CODE] == code
        assert found["caremesh-delivery-attempts"] == attempts
        assert found[envelope.H_ERROR_STAGE] == "fhir_delivery"
        assert found[envelope.H_ID] == headers_dict(headers)[envelope.H_ID]
        assert found[envelope.H_ORIGIN_TOPIC] == namespace.topic(topics.outbox_topic(org))
        assert "SYNTH-ENDPOINT-BODY-MARKER" not in str(message.headers())
        assert len(providers[org].endpoint.all()) == int(attempts)
    invalid = headers_dict(by_org["org-c"].headers())
    assert invalid[envelope.H_ERROR_CODE] == "invalid-record"
    assert providers["org-c"].endpoint.all() == []

    audits = [orjson.loads(m.value()) for m in namespace.consume(topics.AUDIT, 3)]
    assert sorted(a["outcomeDesc"] for a in audits) == [
        "failed: http-400",
        "failed: http-503",
        "failed: invalid-record",
    ]
    assert {a["outcome"] for a in audits} == {"8"}


async def test_committed_records_are_not_delivered_again_after_a_restart(
    namespace: Namespace, providers: dict[str, Provider]
) -> None:
    endpoint = providers["org-a"].endpoint
    namespace.produce(topics.outbox_topic("org-a"), [_record(PATIENTS[0], n) for n in range(5)])
    settings = _settings(namespace, providers)
    async with delivering(settings, Metrics()):
        assert await until(lambda: len(endpoint.accepted()) == 5, timeout=30)
        await asyncio.sleep(1.0)  # let the last commit land
    late = _record(PATIENTS[0], 99)
    namespace.produce(topics.outbox_topic("org-a"), [late])
    async with delivering(settings, Metrics()):  # a new process: empty dedup cache
        assert await until(lambda: len(endpoint.accepted()) == 6, timeout=30)
        await asyncio.sleep(2.0)
    assert len(endpoint.accepted()) == 6
    assert _ce_ids(endpoint)[-1] == headers_dict(late[2])[envelope.H_ID]


def test_caremesh_deliver_command_serves_health_and_metrics(
    namespace: Namespace, providers: dict[str, Provider], spawn: Any
) -> None:
    port = free_port()
    orgs = [{"id": p.org, "fhir_endpoint": p.url, "token": p.token} for p in providers.values()]
    env = namespace.env(
        CAREMESH_ORGANISATIONS=orjson.dumps(orgs).decode(), CAREMESH_DELIVERY__PORT=str(port)
    )
    proc = spawn("deliver", ["deliver"], env, wait_http=f"http://127.0.0.1:{port}/health")
    namespace.produce(topics.outbox_topic("org-c"), [_record(PATIENTS[2], 7)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not providers["org-c"].endpoint.accepted():
        time.sleep(0.2)
    assert len(providers["org-c"].endpoint.accepted()) == 1, proc.log()[-3000:]
    health = httpx.get(f"http://127.0.0.1:{port}/health").json()
    assert health == {
        "status": "ok",
        "organisations": {"org-a": "running", "org-b": "running", "org-c": "running"},
    }
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'caremesh_deliveries_total{organisation="org-c",outcome="delivered"} 1.0' in metrics
    assert PATIENTS[2] not in metrics
    assert PATIENTS[2] not in proc.log()
