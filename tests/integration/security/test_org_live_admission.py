"""Admission is live: `org add` / `org remove` take effect in running workers and delivery.

On the secured broker, the share stage (as `caremesh-share`) and the FHIR delivery connector (as
`caremesh-delivery`) run as subprocesses with one configured organisation, `ctrl`. A CareTeam
names `ctrl` and `clinic-new`, which is not a member yet. `caremesh org add clinic-new` (as the
admin) must make the running processes deliver the patient's next Observations to clinic-new's
FHIR endpoint, a real HTTP server of the test; `caremesh org remove clinic-new` must refuse its
principal and stop everything for it: Observations posted afterwards reach `ctrl` and neither
clinic-new's outbox nor its endpoint. Nothing is restarted.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from caremesh import envelope
from caremesh.envelope import Envelope
from caremesh.kafka import config as kafka_config
from caremesh.kafka.admin import ensure_topics
from caremesh.kafka.config import confluent_security
from caremesh.security.commands import acl_apply, configured_catalogue
from caremesh.settings import OrganisationSettings, Settings, WorkerSettings
from tests.integration.consent.servers import FhirEndpoint, serve
from tests.integration.security.conftest import ADMIN, SecuredBroker, free_port
from tests.support.fhir_recipient import source_id
from tests.support.kafka import Proc, worker_ready

pytestmark = pytest.mark.kafka

INS = "urn:oid:1.2.250.1.213.1.4.8"
PATIENT = "1840275999888"
NEW = "clinic-new"
N = int(os.environ.get("CAREMESH_TEST_ADMISSION_N", "2"))


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


@contextlib.contextmanager
def _endpoint() -> Iterator[tuple[FhirEndpoint, str]]:
    endpoint = FhirEndpoint()
    with serve(endpoint.app(), lifespan="off") as url:
        yield endpoint, url + "/fhir"


def _record(resource: dict[str, object]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    env = Envelope(
        str(uuid.uuid4()),
        "urn:caremesh:source:hosp-a",
        envelope.fhir_event_type(str(resource["resourceType"])),
    )
    headers = [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]
    return PATIENT.encode(), orjson.dumps(resource), headers


def _care_team() -> dict[str, object]:
    return {
        "resourceType": "CareTeam",
        "id": "ct-live",
        "status": "active",
        "subject": {"identifier": {"system": INS, "value": PATIENT}},
        "participant": [
            {"member": {"reference": "Organization/ctrl"}},
            {"member": {"reference": f"Organization/{NEW}"}},
        ],
    }


def _obs(i: int) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"obs-live-{i}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"identifier": {"system": INS, "value": PATIENT}},
        "effectiveDateTime": "2026-01-02T10:00:00+01:00",
        "valueQuantity": {"value": 70 + i, "unit": "kg", "system": "http://unitsofmeasure.org"},
    }


def _ids(endpoint: FhirEndpoint) -> set[str]:
    return {str(source_id(orjson.loads(r.body))) for r in endpoint.accepted()}


def _until(what: str, predicate: Callable[[], bool], *procs: Proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.log()[-2500:]}" for p in procs)
            pytest.fail(f"{what}\n{logs}")
        time.sleep(0.2)


def _records_in(broker: SecuredBroker, topic: str) -> int:
    consumer = Consumer({**broker.conf(*ADMIN), "group.id": f"{ADMIN[0]}.count", "log_level": 0})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def test_org_add_and_remove_take_effect_in_running_workers_and_delivery(
    secured_broker: SecuredBroker, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    broker = secured_broker
    prefix = f"l{uuid.uuid4().hex[:6]}."
    with _endpoint() as (ctrl, ctrl_url), _endpoint() as (new, new_url):
        common = {
            "CAREMESH_KAFKA__TOPIC_PREFIX": prefix,
            "CAREMESH_KAFKA__PARTITIONS": "2",
            "CAREMESH_WORKER__APP_ID": f"{prefix}app",
            "CAREMESH_WORKER__DATA_DIR": str(tmp_path / "worker"),
            "CAREMESH_STATE_DIR": str(tmp_path / "state"),
            "CAREMESH_ORGANISATIONS": json.dumps(
                [{"id": "ctrl", "fhir_endpoint": ctrl_url, "subscriptions": ["Observation"]}]
            ),
        }
        admin_env = broker.env(ADMIN[0], ADMIN[1], **common)
        admin = Settings(
            kafka=broker.admin(topic_prefix=prefix, partitions=2),
            organisations=[OrganisationSettings(id="ctrl", fhir_endpoint=ctrl_url)],
            worker=WorkerSettings(app_id=f"{prefix}app"),
        )
        ensure_topics(
            broker.bootstrap,
            configured_catalogue(admin),
            partitions=2,
            replication_factor=1,
            prefix=prefix,
            client_config=confluent_security(admin.kafka),
        )
        acl_apply(admin)
        # ACLs reach the authorizer through the metadata log: wait until a re-apply finds them.
        _until(
            "the applied ACLs never became visible",
            lambda: not acl_apply(admin, dry_run=True).create,
        )

        share_port, delivery_port = free_port(), free_port()
        share = spawn(
            "share",
            ["worker", "--stage", "share"],
            broker.env("caremesh-share", **common, CAREMESH_WORKER__WEB_PORT=str(share_port)),
        )
        health = f"http://127.0.0.1:{delivery_port}/health"
        delivery = spawn(
            "delivery",
            ["deliver"],
            broker.env("caremesh-delivery", **common, CAREMESH_DELIVERY__PORT=str(delivery_port)),
            wait_http=health,
        )
        worker_ready(share, share_port, timeout=120)

        def delivering() -> dict[str, str]:
            answer: dict[str, str] = httpx.get(health, timeout=5).json()["organisations"]
            return answer

        producer = Producer(kafka_config.producer_config(broker.admin()))

        def post(*resources: dict[str, object]) -> None:
            for key, value, headers in map(_record, resources):
                producer.produce(prefix + "clinical.fhir.v1", key=key, value=value, headers=headers)
            assert producer.flush(30) == 0

        # The care team names clinic-new before it is a member; ctrl receives from the start.
        post(_care_team(), _obs(0))
        _until("ctrl got nothing", lambda: "obs-live-0" in _ids(ctrl), share, delivery)

        # Admission, with the share stage and the delivery connector running.
        added = _caremesh(
            admin_env, "org", "add", NEW, "--territory", "north", "--endpoint", new_url
        )
        assert "credentials created" in added
        password = (tmp_path / "state" / "secrets" / f"org-{NEW}.password").read_text().strip()
        _until(
            "delivery did not start clinic-new",
            lambda: delivering().get(NEW) == "running",
            delivery,
        )
        _until(
            "the share stage did not learn of clinic-new",
            lambda: f"organisation={NEW} active" in share.log(),
            share,
        )
        served = [_obs(i) for i in range(1, N + 1)]
        post(*served)
        want = {str(o["id"]) for o in served}
        _until("clinic-new got nothing", lambda: want <= _ids(new), share, delivery)
        assert _ids(new) == want  # what came before its admission is not replayed to it

        # Removal: its principal is refused and nothing more reaches it.
        removed = _caremesh(admin_env, "org", "remove", NEW)
        assert "ACLs deleted" in removed
        errors: list[int] = []
        org_conf = {
            **broker.conf(f"org-{NEW}", password),
            "log_level": 0,
            "error_cb": lambda err: errors.append(err.code()),
        }

        def refused() -> bool:
            client = AdminClient(org_conf)
            try:
                client.list_topics(timeout=2)
            except KafkaException as exc:
                errors.append(exc.args[0].code())
            client.poll(0.5)  # serves error_cb
            return KafkaError._AUTHENTICATION in errors

        _until("the removed organisation can still connect", refused)
        _until("delivery still runs clinic-new", lambda: NEW not in delivering(), delivery)
        _until(
            "the share stage did not drop clinic-new",
            lambda: f"organisation={NEW} removed" in share.log(),
            share,
        )
        in_outbox = _records_in(broker, f"{prefix}outbox.{NEW}.v1")
        assert in_outbox == N
        after = [_obs(i) for i in range(N + 1, 2 * N + 1)]
        post(*after)
        everything = {str(o["id"]) for o in (_obs(0), *served, *after)}
        _until("ctrl missed records", lambda: everything <= _ids(ctrl), share, delivery)
        assert _ids(new) == want
        assert _records_in(broker, f"{prefix}outbox.{NEW}.v1") == in_outbox
        assert delivering() == {"ctrl": "running"}
        for proc in (share, delivery):
            assert PATIENT not in proc.log()
