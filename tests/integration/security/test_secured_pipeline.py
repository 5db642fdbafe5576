"""The pipeline end to end on the secured broker, every process as its own principal under ACLs.

`caremesh topics create` and `caremesh acl apply` run as the admin; the ingest API, the validate
stage and the share stage then run as `caremesh-ingest-api`, `caremesh-validate` and
`caremesh-share`, each with only the rules the catalogue gives it. FHIR resources posted to the
ingest API must reach clinical.fhir.v1 and the care-team organisation's outbox: a client that
ignored its credentials, or needed more than its principal may do, stops the flow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, Message

from tests.integration.security.conftest import ADMIN, SecuredBroker, free_port
from tests.support.fhir_recipient import source_id
from tests.support.kafka import Proc, worker_ready

pytestmark = pytest.mark.kafka

INS = "urn:oid:1.2.250.1.213.1.4.8"
PATIENT = "2990175123456"
SOURCE_TOKEN = "hosp-a-ingest-token-0001"
N = int(os.environ.get("CAREMESH_TEST_SECURED_N", "3"))


def _caremesh(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "caremesh.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def read_topic(
    broker: SecuredBroker, topic: str, count: int, timeout: float = 60.0
) -> list[Message]:
    """Read `count` records from the start of `topic` as the admin."""
    consumer = Consumer(
        {
            **broker.conf(*ADMIN),
            "group.id": f"{ADMIN[0]}.reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            assert error is None or error.code() == KafkaError._PARTITION_EOF, error
            if error is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def _care_team(org: str) -> dict[str, object]:
    return {
        "resourceType": "CareTeam",
        "id": f"ct-{org}",
        "status": "active",
        "subject": {"identifier": {"system": INS, "value": PATIENT}},
        "participant": [{"member": {"reference": f"Organization/{org}"}}],
    }


def _obs(i: int) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"obs{i}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"identifier": {"system": INS, "value": PATIENT}},
        "effectiveDateTime": "2026-01-02T10:00:00+01:00",
        "valueQuantity": {"value": 70 + i, "unit": "kg", "system": "http://unitsofmeasure.org"},
    }


def platform_env(tmp: Path, prefix: str, orgs: list[dict[str, object]]) -> dict[str, str]:
    """The environment every process of this platform shares (without credentials)."""
    return {
        "CAREMESH_KAFKA__TOPIC_PREFIX": prefix,
        "CAREMESH_KAFKA__PARTITIONS": "2",
        "CAREMESH_WORKER__APP_ID": f"{prefix}app",
        "CAREMESH_WORKER__DATA_DIR": str(tmp / "worker"),
        "CAREMESH_STATE_DIR": str(tmp / "state"),
        "CAREMESH_ORGANISATIONS": json.dumps(orgs),
        "CAREMESH_SOURCES": json.dumps([{"id": "hosp-a", "token": SOURCE_TOKEN}]),
    }


def test_pipeline_runs_end_to_end_with_each_process_as_its_own_principal(
    secured_broker: SecuredBroker, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    broker = secured_broker
    prefix = f"p{uuid.uuid4().hex[:6]}."
    orgs: list[dict[str, object]] = [{"id": "hosp-b", "subscriptions": ["Observation"]}]
    common = platform_env(tmp_path, prefix, orgs)
    admin_env = broker.env(ADMIN[0], ADMIN[1], **common)
    _caremesh(admin_env, "topics", "create")
    assert "ACLs: " in _caremesh(admin_env, "acl", "apply")
    # ACLs reach the authorizer through the metadata log: wait until a re-apply finds them all.
    deadline = time.monotonic() + 30
    while "ACLs: 0 to create" not in _caremesh(admin_env, "acl", "apply", "--dry-run"):
        assert time.monotonic() < deadline, "the applied ACLs never became visible"
        time.sleep(0.5)

    api_port, validate_port, share_port = free_port(), free_port(), free_port()
    spawn(
        "ingest-api",
        ["ingest-api"],
        broker.env("caremesh-ingest-api", **common, CAREMESH_HTTP_INGEST__PORT=str(api_port)),
        wait_http=f"http://127.0.0.1:{api_port}/health",
    )
    validate = spawn(
        "validate",
        ["worker", "--stage", "validate"],
        broker.env("caremesh-validate", **common, CAREMESH_WORKER__WEB_PORT=str(validate_port)),
    )
    share = spawn(
        "share",
        ["worker", "--stage", "share"],
        broker.env("caremesh-share", **common, CAREMESH_WORKER__WEB_PORT=str(share_port)),
    )
    worker_ready(validate, validate_port, timeout=120)
    worker_ready(share, share_port, timeout=120)
    health = httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=5)
    assert health.status_code == 200, health.text  # the probe authenticates too

    auth = {"Authorization": f"Bearer {SOURCE_TOKEN}", "Content-Type": "application/fhir+json"}
    base = f"http://127.0.0.1:{api_port}/fhir"
    team = orjson.dumps(_care_team("hosp-b"))
    posted = httpx.post(f"{base}/CareTeam", content=team, headers=auth)
    assert posted.status_code == 202, posted.text
    for i in range(N):
        posted = httpx.post(f"{base}/Observation", content=orjson.dumps(_obs(i)), headers=auth)
        assert posted.status_code == 202, posted.text

    clinical = read_topic(broker, prefix + "clinical.fhir.v1", N + 1)
    assert len(clinical) == N + 1, validate.log()[-3000:]
    outbox = read_topic(broker, prefix + "outbox.hosp-b.v1", N)
    assert sorted(str(source_id(orjson.loads(m.value() or b"{}"))) for m in outbox) == [
        f"obs{i}" for i in range(N)
    ], share.log()[-3000:]
    assert {m.key() for m in outbox} == {PATIENT.encode()}
    for proc in (validate, share):
        assert "AUTHORIZATION_FAILED" not in proc.log(), proc.log()[-3000:]
