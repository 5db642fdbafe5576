"""A kill -9 of the pathways worker in the middle of a stream, then a restart: no alert lost,
none repeated under another id (records repeated with the same id are dropped by sinks)."""

from __future__ import annotations

import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from caremesh import envelope
from caremesh.envelope import Envelope
from tests.support.kafka import Namespace, Proc, free_port, worker_ready
from tests.unit.pathways.pathway_fixtures import ICD10, condition, observation

pytestmark = pytest.mark.kafka

PATIENTS = 60


def _record(
    patient: int, resource: dict[str, object]
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    env = Envelope(
        f"{patient}-{resource['id']}",
        "urn:caremesh:source:hosp-a",
        envelope.fhir_event_type(str(resource["resourceType"])),
    )
    headers = [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]
    return f"2990175{patient:06d}".encode(), orjson.dumps(resource), headers


def _start(spawn: Callable[..., Proc], namespace: Namespace) -> Proc:
    port = free_port()
    worker = spawn(
        "worker",
        ["worker", "--stage", "pathways"],
        namespace.env(
            CAREMESH_WORKER__WEB_PORT=str(port),
            CAREMESH_PATHWAYS__COORDINATORS='{"copd": "Organization/org-a"}',
        ),
    )
    worker_ready(worker, port, timeout=180)
    return worker


def test_kill_9_mid_stream_loses_no_alert_and_repeats_none(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    now = datetime.now(UTC)
    records = []
    for step in range(4):  # interleaved: every patient's story is spread over the stream
        for p in range(PATIENTS):
            if step == 0:
                resource = condition(f"dx-{p}", ICD10, "J44.1", when=now - timedelta(days=10))
            else:
                resource = observation(
                    f"spo2-{p}-{step}",
                    "59408-5",
                    85 + step,
                    "%",
                    when=now - timedelta(hours=5 - step),
                )
            records.append(_record(p, resource))

    worker = _start(spawn, namespace)
    conditions, readings = records[:PATIENTS], records[PATIENTS:]
    namespace.produce("clinical.fhir.v1", conditions)

    produced = [0]
    killing, restarted = threading.Event(), threading.Event()

    def trickle() -> None:
        # The stream goes on through the kill: half the readings arrive while the worker runs, the
        # next sixth as it is killed and while it is down, the rest once the new worker is up.
        for i, record in enumerate(readings):
            if i == len(readings) // 2:
                killing.wait(timeout=120)
            if i == 2 * len(readings) // 3:
                restarted.wait(timeout=180)
            namespace.produce("clinical.fhir.v1", [record])
            produced[0] += 1
            time.sleep(0.05)

    producer = threading.Thread(target=trickle)
    producer.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        produced[0] < len(readings) // 2
        or len(namespace.consume_all("pathway.alerts.v1", settle=0.5)) < 5
    ):
        time.sleep(0.5)
    killing.set()
    worker.process.send_signal(signal.SIGKILL)  # mid-stream: some alerts out, others not yet
    worker.process.wait(timeout=30)
    killed_at = len(namespace.consume_all("pathway.alerts.v1", settle=1))
    assert killed_at < PATIENTS, "the stream ended before the kill; make it longer"

    _start(spawn, namespace)
    restarted.set()
    producer.join()
    deadline = time.monotonic() + 180
    by_patient: dict[bytes, set[str]] = defaultdict(set)
    while time.monotonic() < deadline:
        alerts = namespace.consume_all("pathway.alerts.v1", settle=3)
        by_patient = defaultdict(set)
        for m in alerts:
            by_patient[m.key()].add(orjson.loads(m.value())["id"])
        if len(by_patient) == PATIENTS:
            break
    assert len(by_patient) == PATIENTS  # no alert lost
    assert all(len(ids) == 1 for ids in by_patient.values())  # none repeated under a new id
    repeated = len(alerts) - PATIENTS
    print(f"\nalerts before the kill: {killed_at}; records repeated with the same id: {repeated}")
