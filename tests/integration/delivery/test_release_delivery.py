"""Each recipient gets its FHIR release: delivery through the real broker converts or refuses."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from caremesh import envelope, topics
from caremesh.envelope import Envelope, fhir_event_type, headers_dict
from caremesh.fhir.releases import validation_problem
from caremesh.settings import FhirRelease, OrganisationSettings, Settings
from tests.integration.consent.servers import FhirEndpoint, serve
from tests.support.delivery import delivering, until
from tests.support.hapi import Hapi
from tests.support.kafka import Namespace
from tests.support.settings import evolve

pytestmark = pytest.mark.kafka

RELEASES: dict[str, FhirRelease] = {"org-a": "R4", "org-b": "R5"}
AMB = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}
PERIOD = {"start": "2026-11-02T08:00:00+01:00", "end": "2026-11-02T09:30:00+01:00"}
PRACTITIONER = {"reference": "Practitioner/pr-synth-1"}


@pytest.fixture
def endpoints() -> Iterator[dict[str, tuple[FhirEndpoint, str]]]:
    with contextlib.ExitStack() as stack:
        out = {}
        for org in RELEASES:
            endpoint = FhirEndpoint()
            url = stack.enter_context(serve(endpoint.app(), lifespan="off"))
            out[org] = (endpoint, url + "/fhir")
        yield out


def _record(
    resource: dict[str, Any], release: str, patient: str
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    env = Envelope(str(uuid.uuid4()), "urn:caremesh:stage:share", fhir_event_type("Encounter"))
    headers = [(k, v if isinstance(v, bytes) else b"") for k, v in env.headers()]
    headers += [(envelope.H_FHIR_RELEASE, release.encode()), (envelope.H_CONSENT_DECISIONS, b"c1")]
    return patient.encode(), orjson.dumps(resource), headers


R5_ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "enc-r5-synth",
    "status": "completed",
    "class": [{"coding": [AMB]}],
    "subject": {"reference": "Patient/p-synth-r5"},
    "participant": [{"actor": PRACTITIONER}],
    "actualPeriod": PERIOD,
    "reason": [{"value": [{"concept": {"text": "synthetic reason"}}]}],
}
R4_ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "enc-r4-synth",
    "status": "finished",
    "class": AMB,
    "subject": {"reference": "Patient/p-synth-r4"},
    "participant": [{"individual": PRACTITIONER}],
    "period": PERIOD,
}
UNCONVERTIBLE = R5_ENCOUNTER | {"id": "enc-r5-stopped", "status": "discontinued"}


async def test_each_recipient_gets_its_release_and_an_unconvertible_record_fails(
    namespace: Namespace, endpoints: dict[str, tuple[FhirEndpoint, str]]
) -> None:
    to_r4 = [
        _record(R5_ENCOUNTER, "R5", "2990175123456"),
        _record(UNCONVERTIBLE, "R5", "2990175123456"),
    ]
    to_r5 = [_record(R4_ENCOUNTER, "R4", "1840275999888")]
    namespace.produce(topics.outbox_topic("org-a"), to_r4)
    namespace.produce(topics.outbox_topic("org-b"), to_r5)
    settings = Settings(
        organisations=[
            OrganisationSettings(
                id=org,
                fhir_endpoint=endpoints[org][1],
                token=SecretStr(f"tok-synth-{org}"),
                fhir_release=release,
            )
            for org, release in RELEASES.items()
        ]
    )
    settings = evolve(
        settings,
        kafka__bootstrap_servers=namespace.kafka,
        kafka__topic_prefix=namespace.prefix,
        delivery__max_attempts=3,
    )
    r4_endpoint, r5_endpoint = endpoints["org-a"][0], endpoints["org-b"][0]
    async with delivering(settings):
        arrived = await until(
            lambda: len(r4_endpoint.accepted()) >= 1 and len(r5_endpoint.accepted()) >= 1,
            timeout=60,
        )
        assert arrived
        # read in a thread: the delivery tasks share this event loop
        failed = await asyncio.to_thread(namespace.consume, topics.DELIVERY_FAILED, 1)
        audit = await asyncio.to_thread(namespace.consume, topics.AUDIT, 3)
        await asyncio.sleep(1.0)  # nothing more should arrive

    # the R5 source's Encounter reached the R4 recipient as valid R4
    [at_r4] = r4_endpoint.accepted()
    assert (at_r4.method, at_r4.path) == ("PUT", "Encounter/enc-r5-synth")
    r4_body = orjson.loads(at_r4.body)
    assert validation_problem(r4_body, "R4B") is None
    assert r4_body["status"] == "finished"
    assert r4_body["class"] == AMB
    assert r4_body["period"] == PERIOD
    assert r4_body["participant"] == [{"individual": PRACTITIONER}]
    assert r4_body["reasonCode"] == [{"text": "synthetic reason"}]
    assert "actualPeriod" not in r4_body

    # the R4 source's Encounter reached the R5 recipient as valid R5
    [at_r5] = r5_endpoint.accepted()
    r5_body = orjson.loads(at_r5.body)
    assert validation_problem(r5_body, "R5") is None
    assert r5_body["status"] == "completed"
    assert r5_body["class"] == [{"coding": [AMB]}]
    assert r5_body["actualPeriod"] == PERIOD
    assert r5_body["participant"] == [{"actor": PRACTITIONER}]

    # the unconvertible one was never sent and is on delivery.failed.v1 with its reason
    assert len(r4_endpoint.all()) == 1
    [record] = failed
    headers = headers_dict(record.headers() or [])
    assert headers[envelope.H_ERROR_CODE] == "unconvertible-no-equivalent-code"
    assert "Encounter.status" in headers[envelope.H_ERROR_REASON]
    assert "R5-to-R4" in headers[envelope.H_ERROR_REASON]
    assert orjson.loads(record.value() or b"") == UNCONVERTIBLE  # the original, for operators
    assert len(namespace.consume_all(topics.DELIVERY_FAILED, settle=1)) == 1

    audits = [orjson.loads(m.value() or b"") for m in audit]
    assert sorted(a["outcome"] for a in audits) == ["0", "0", "8"]
    [refused] = [a for a in audits if a["outcome"] != "0"]
    assert refused["outcomeDesc"] == "failed: unconvertible-no-equivalent-code"


async def test_real_fhir_servers_of_each_release_accept_what_delivery_converts(
    namespace: Namespace, hapi_r4: Hapi, hapi_r5: Hapi
) -> None:
    """Through the broker to HAPI FHIR R4 and R5 servers (HAPI's validator on every write)."""
    servers = {"org-a": hapi_r4, "org-b": hapi_r5}
    patients = {org: hapi.unique("p") for org, hapi in servers.items()}
    for org, hapi in servers.items():
        response = hapi.put({"resourceType": "Patient", "id": patients[org], "gender": "female"})
        assert response.status_code in (200, 201), response.text[:300]
    from_r5 = R5_ENCOUNTER | {
        "id": hapi_r4.unique("enc"),
        "subject": {"reference": f"Patient/{patients['org-a']}"},
    }
    from_r5.pop("participant")  # the servers hold no practitioner
    from_r4 = R4_ENCOUNTER | {
        "id": hapi_r5.unique("enc"),
        "subject": {"reference": f"Patient/{patients['org-b']}"},
    }
    from_r4.pop("participant")
    refused = from_r5 | {"id": hapi_r4.unique("enc"), "status": "discontinued"}
    namespace.produce(
        topics.outbox_topic("org-a"),
        [_record(from_r5, "R5", "2990175123456"), _record(refused, "R5", "2990175123456")],
    )
    namespace.produce(topics.outbox_topic("org-b"), [_record(from_r4, "R4", "1840275999888")])
    settings = Settings(
        organisations=[
            OrganisationSettings(id=org, fhir_endpoint=hapi.base_url, fhir_release=hapi.release)
            for org, hapi in servers.items()
        ]
    )
    settings = evolve(
        settings,
        kafka__bootstrap_servers=namespace.kafka,
        kafka__topic_prefix=namespace.prefix,
        delivery__max_attempts=2,
    )
    async with delivering(settings):
        failed = await asyncio.to_thread(namespace.consume, topics.DELIVERY_FAILED, 1)
        audit = await asyncio.to_thread(namespace.consume, topics.AUDIT, 3)

    assert [a["outcome"] for a in map(_json, audit)].count("0") == 2, "both were accepted"
    at_r4 = await asyncio.to_thread(hapi_r4.read, "Encounter", from_r5["id"])
    assert at_r4 is not None
    assert at_r4["class"] == AMB
    assert at_r4["period"] == PERIOD
    assert at_r4["status"] == "finished"
    at_r5 = await asyncio.to_thread(hapi_r5.read, "Encounter", from_r4["id"])
    assert at_r5 is not None
    assert at_r5["class"] == [{"coding": [AMB]}]
    assert at_r5["actualPeriod"] == PERIOD
    assert at_r5["status"] == "completed"
    assert await asyncio.to_thread(hapi_r4.read, "Encounter", refused["id"]) is None
    [record] = failed
    headers = headers_dict(record.headers() or [])
    assert headers[envelope.H_ERROR_CODE] == "unconvertible-no-equivalent-code"


def _json(message: Any) -> Any:
    return orjson.loads(message.value() or b"")
