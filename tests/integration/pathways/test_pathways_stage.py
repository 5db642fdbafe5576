"""The pathways stage in a real worker: alerts raised once, kept once across a restart, and
raised again only after a coordinator closed the first one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from caremesh import envelope
from caremesh.envelope import Envelope
from caremesh.pathways import action_value, make_action
from tests.support.kafka import Namespace, Proc, free_port, worker_ready
from tests.unit.pathways.pathway_fixtures import ICD10, condition, observation

pytestmark = pytest.mark.kafka

PATIENT = b"2990175123456"


def _h(msg_id: str, rtype: str) -> list[tuple[str, bytes]]:
    env = Envelope(msg_id, "urn:caremesh:source:hosp-a", envelope.fhir_event_type(rtype))
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]


def _clinical(resource: dict[str, object]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return PATIENT, orjson.dumps(resource), _h(str(resource["id"]), str(resource["resourceType"]))


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
    worker_ready(worker, port)
    return worker


def test_low_spo2_twice_raises_one_alert_that_survives_restart_and_closes(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    now = datetime.now(UTC)
    worker = _start(spawn, namespace)
    namespace.produce(
        "clinical.fhir.v1",
        [
            _clinical(condition("copd-dx", ICD10, "J44.1", when=now - timedelta(days=30))),
            _clinical(observation("spo2-1", "59408-5", 91, "%", when=now - timedelta(hours=5))),
            _clinical(observation("spo2-2", "59408-5", 88, "%", when=now - timedelta(hours=4))),
        ],
    )
    assert namespace.consume_all("pathway.alerts.v1", settle=4) == []  # only one reading < 90
    namespace.produce(
        "clinical.fhir.v1",
        [
            _clinical(observation("spo2-3", "59408-5", 87, "%", when=now - timedelta(hours=3))),
        ],
    )
    alerts = namespace.consume("pathway.alerts.v1", 1)
    assert len(alerts) == 1
    comm = orjson.loads(alerts[0].value())
    assert comm["resourceType"] == "Communication"
    assert comm["recipient"][0]["reference"] == "Organization/org-a"
    assert alerts[0].key() == PATIENT
    alert_id = comm["id"]

    # Restart: the state comes back from the changelog; a further low reading while the alert
    # is open raises nothing new.
    worker.process.terminate()
    worker.process.wait(timeout=60)
    worker = _start(spawn, namespace)
    namespace.produce(
        "clinical.fhir.v1",
        [
            _clinical(observation("spo2-4", "59408-5", 86, "%", when=now - timedelta(hours=2))),
        ],
    )
    assert len(namespace.consume_all("pathway.alerts.v1", settle=5)) == 1

    # The coordinator acknowledges; two new low readings raise a new alert with a new id.
    ack = make_action(
        "ack",
        alert_id=alert_id,
        pathway_id="copd",
        coordinator="coord-1",
        at=datetime.now(UTC),
        note="called the patient",
    )
    namespace.produce("pathway.actions.v1", [(PATIENT, action_value(ack), [])])
    namespace.consume_all("pathway.actions.v1", settle=2)
    namespace.produce(
        "clinical.fhir.v1",
        [
            _clinical(observation("spo2-5", "59408-5", 85, "%", when=now - timedelta(hours=1))),
            _clinical(observation("spo2-6", "59408-5", 84, "%", when=now - timedelta(minutes=30))),
        ],
    )
    alerts = namespace.consume_all("pathway.alerts.v1", settle=5)
    ids = [orjson.loads(m.value())["id"] for m in alerts]
    assert len(ids) == 2
    assert ids[0] == alert_id
    assert ids[1] != alert_id
    audits = [orjson.loads(m.value()) for m in namespace.consume_all("audit.v1", settle=2)]
    assert len(audits) == 2
    assert all(a["outcome"] == "0" for a in audits)
