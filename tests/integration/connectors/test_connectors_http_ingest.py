"""The FHIR HTTP ingest API against the real broker and a real uvicorn server."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import orjson
import pytest

from caremesh.connectors.http_ingest import create_app
from caremesh.envelope import body_message_id, message_id
from caremesh.kafka.io import AsyncProducer
from caremesh.metrics import Metrics
from caremesh.settings import Settings
from tests.integration.connectors.conftest import (
    HOSP_TOKEN,
    LAB_TOKEN,
    RunningApi,
    closed_address,
    headers_of,
    read_topic,
    serve,
)
from tests.support.settings import evolve
from tests.unit.connectors.connectors_synth import (
    SYNTH_FAMILY,
    SYNTH_GIVEN,
    SYNTH_LOCAL_ID,
    bundle,
    dumps,
    observation,
    patient,
)

pytestmark = pytest.mark.kafka

FHIR = "application/fhir+json"
HOSP = {"Authorization": f"Bearer {HOSP_TOKEN}", "Content-Type": FHIR}
TWENTY_MB = 20 * 1024 * 1024


def ingest_topic(settings: Settings) -> str:
    return settings.kafka.topic_prefix + "ingest.fhir.v1"


def assert_outcome(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] == "error"
    assert issue["details"]["coding"][0]["code"] == code
    assert issue["diagnostics"].startswith(code + ":")


def test_a_resource_is_in_kafka_as_sent_when_202_is_answered(
    api: RunningApi, settings: Settings
) -> None:
    raw = b'{ "resourceType" : "Patient",\n  "id": "p1", "birthDate": "1950-04-02" }'
    response = httpx.post(
        f"{api.url}/fhir/Patient",
        content=raw,
        headers={**HOSP, "Content-Type": f"{FHIR}; fhirVersion=4.0"},
    )
    assert response.status_code == 202, response.text
    mid = body_message_id("synth-hosp", raw)
    assert response.json() == {"messageId": mid, "resources": 1}
    assert "location" not in response.headers
    assert "etag" not in response.headers
    [record] = read_topic(settings.kafka.bootstrap_servers, ingest_topic(settings), 1, timeout=5)
    assert record.value() == raw
    assert record.key() == mid.encode()
    headers = headers_of(record)
    assert headers["ce_id"] == mid
    assert headers["ce_source"] == "urn:caremesh:source:synth-hosp"
    assert headers["ce_type"] == "org.hl7.fhir.Patient"
    assert headers["ce_specversion"] == "1.0"
    assert headers["content-type"] == FHIR
    assert headers["caremesh-fhir-release"] == "R4"


def test_a_transaction_bundle_gets_its_identifier_as_message_id(
    api: RunningApi, settings: Settings
) -> None:
    raw = dumps(bundle("transaction", identifier="B-100"))
    response = httpx.post(
        f"{api.url}/fhir",
        content=raw,
        headers={"Authorization": f"Bearer {LAB_TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text
    mid = message_id("synth-lab", "urn:synth:bundle|B-100")
    assert response.json() == {"messageId": mid, "resources": 2}
    [record] = read_topic(settings.kafka.bootstrap_servers, ingest_topic(settings), 1)
    assert record.value() == raw
    headers = headers_of(record)
    assert headers["ce_source"] == "urn:caremesh:source:synth-lab"
    assert headers["ce_type"] == "org.hl7.fhir.Bundle"
    assert headers["caremesh-fhir-release"] == "R4"  # the source's configured release


def test_the_same_idempotency_key_gives_the_same_ce_id(api: RunningApi, settings: Settings) -> None:
    ids = []
    for birth in ("1950-04-02", "1950-04-03"):
        response = httpx.post(
            f"{api.url}/fhir/Patient",
            content=dumps(patient(birthDate=birth)),
            headers={**HOSP, "Idempotency-Key": "order-77"},
        )
        assert response.status_code == 202
        ids.append(response.json()["messageId"])
    assert ids[0] == ids[1] == message_id("synth-hosp", "order-77")
    records = read_topic(settings.kafka.bootstrap_servers, ingest_topic(settings), 2)
    assert [headers_of(r)["ce_id"] for r in records] == [ids[0], ids[0]]


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": FHIR},
        {"Authorization": "Bearer not-a-token", "Content-Type": FHIR},
        {"Authorization": f"Basic {HOSP_TOKEN}", "Content-Type": FHIR},
        {"Authorization": f"Bearer {HOSP_TOKEN}x", "Content-Type": FHIR},
    ],
    ids=["missing", "unknown", "not bearer", "token prefix"],
)
def test_without_a_valid_token_401_and_nothing_written(
    api: RunningApi, settings: Settings, headers: dict[str, str]
) -> None:
    response = httpx.post(f"{api.url}/fhir/Patient", content=dumps(patient()), headers=headers)
    assert_outcome(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    ok = httpx.post(f"{api.url}/fhir/Observation", content=dumps(observation()), headers=HOSP)
    assert ok.status_code == 202
    records = read_topic(settings.kafka.bootstrap_servers, ingest_topic(settings), 1)
    assert [r.value() for r in records] == [dumps(observation())]


def _chunked_20mb() -> Iterator[bytes]:
    block = b'{"resourceType": "Patient", "x": "' + b"a" * (1024 * 1024)
    for _ in range(20):
        yield block


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_20mb_body_gets_413_and_the_api_keeps_serving(
    api: RunningApi, settings: Settings, chunked: bool
) -> None:
    content = _chunked_20mb() if chunked else b" " * TWENTY_MB
    response = httpx.post(f"{api.url}/fhir/Patient", content=content, headers=HOSP, timeout=60)
    assert_outcome(response, 413, "too-large")
    ok = httpx.post(f"{api.url}/fhir/Patient", content=dumps(patient()), headers=HOSP)
    assert ok.status_code == 202
    records = read_topic(settings.kafka.bootstrap_servers, ingest_topic(settings), 1)
    assert [r.value() for r in records] == [dumps(patient())]


BAD_INPUTS = [
    pytest.param("/fhir/Patient", b"{not json", FHIR, 400, "invalid-json", id="invalid json"),
    pytest.param("/fhir/Patient", b"", FHIR, 400, "empty-body", id="empty body"),
    pytest.param(
        "/fhir/Patient",
        b'{"resourceType":"Patient","id":"\xff\xfe"}',
        FHIR,
        400,
        "invalid-utf8",
        id="invalid utf-8",
    ),
    pytest.param(
        "/fhir/Patient", b"[" * 100_000 + b"]" * 100_000, FHIR, 400, "too-deep", id="too deep"
    ),
    pytest.param(
        "/fhir/Observation",
        dumps(patient()),
        FHIR,
        400,
        "resource-type-mismatch",
        id="wrong resourceType",
    ),
    pytest.param(
        "/fhir/Patient",
        dumps(patient(birthDate="02/04/1950")),
        FHIR,
        422,
        "validation-failed",
        id="fails validation",
    ),
    pytest.param(
        "/fhir",
        dumps(bundle("searchset")),
        FHIR,
        422,
        "unsupported-bundle-type",
        id="searchset bundle",
    ),
    pytest.param("/fhir", dumps(patient()), FHIR, 400, "not-a-bundle", id="resource to /fhir"),
    pytest.param(
        "/fhir/Patient",
        dumps(patient()),
        "text/plain",
        415,
        "unsupported-media-type",
        id="not json",
    ),
    pytest.param(
        "/fhir/Patient",
        dumps(patient()),
        f"{FHIR}; fhirVersion=3.0",
        400,
        "unsupported-release",
        id="STU3",
    ),
]


@pytest.mark.parametrize(("path", "body", "content_type", "status", "code"), BAD_INPUTS)
def test_bad_input_gets_an_outcome_and_the_next_message_goes_through(
    api: RunningApi,
    settings: Settings,
    path: str,
    body: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    response = httpx.post(
        f"{api.url}{path}", content=body, headers={**HOSP, "Content-Type": content_type}
    )
    assert_outcome(response, status, code)
    for value in (SYNTH_FAMILY, SYNTH_GIVEN, SYNTH_LOCAL_ID, "02/04/1950"):
        assert value not in response.text
    valid = dumps(bundle("batch"))
    ok = httpx.post(f"{api.url}/fhir", content=valid, headers=HOSP)
    assert ok.status_code == 202
    records = read_topic(settings.kafka.bootstrap_servers, ingest_topic(settings), 1)
    assert [r.value() for r in records] == [valid]


def test_503_with_retry_after_when_kafka_cannot_take_the_write(settings: Settings) -> None:
    dead = closed_address()
    settings = evolve(
        settings,
        kafka__bootstrap_servers=dead,
    )
    producer = AsyncProducer(dead, **{"message.timeout.ms": 2000, "log_level": 0})
    try:
        with serve(create_app(settings, producer, Metrics())) as url:
            response = httpx.post(
                f"{url}/fhir/Patient", content=dumps(patient()), headers=HOSP, timeout=30
            )
            assert_outcome(response, 503, "kafka-unavailable")
            assert int(response.headers["retry-after"]) > 0
            assert httpx.get(f"{url}/health", timeout=30).status_code == 503
    finally:
        producer.close(timeout=1)


def test_health_metrics_and_openapi_need_no_token(api: RunningApi) -> None:
    assert httpx.get(f"{api.url}/health").json() == {"status": "ok"}
    httpx.post(f"{api.url}/fhir/Patient", content=b"{", headers=HOSP)
    metrics = httpx.get(f"{api.url}/metrics")
    assert metrics.status_code == 200
    assert 'caremesh_messages_in_total{component="http_ingest"} 1.0' in metrics.text
    assert (
        'caremesh_messages_rejected_total{code="invalid-json",component="http_ingest"} 1.0'
        in metrics.text
    )
    spec = httpx.get(f"{api.url}/openapi.json").json()
    assert {"/fhir", "/fhir/{resource_type}", "/health", "/metrics"} <= set(spec["paths"])
    assert "application/fhir+json" in spec["paths"]["/fhir"]["post"]["requestBody"]["content"]


def test_logs_carry_no_names_or_identifiers(
    api: RunningApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies = [
        ("/fhir/Patient", dumps(patient())),
        ("/fhir", dumps(bundle("transaction", identifier=SYNTH_LOCAL_ID))),
        ("/fhir/Patient", dumps(patient(birthDate=SYNTH_GIVEN))),
        ("/fhir/Patient", dumps(patient(name=SYNTH_FAMILY))),
        ("/fhir/Observation", dumps(patient())),
        ("/fhir/Patient", dumps({"resourceType": SYNTH_FAMILY})),
        ("/fhir/Patient", orjson.dumps(patient())[:-5]),
    ]
    statuses = [
        httpx.post(
            f"{api.url}{path}", content=body, headers={**HOSP, "Idempotency-Key": SYNTH_GIVEN}
        ).status_code
        for path, body in bodies
    ]
    assert statuses == [202, 202, 422, 422, 400, 400, 400]
    assert caplog.text.count("ingest accepted") == 2
    assert caplog.text.count("ingest refused") == 5
    for value in (SYNTH_FAMILY, SYNTH_GIVEN, SYNTH_LOCAL_ID):
        assert value not in caplog.text
