"""HAPI FHIR's validator finds no error in what caremesh publishes for recipients, end to end.

A synthetic demo territory's events (FHIR load Bundles, Observations, Encounters over the FHIR
ingest topic; ADT and ORU over the HL7 v2 one) go through a real worker (hl7v2, validate, share,
pathways) on the real broker; every record then on an organisation's outbox, every pathway alert
and every AuditEvent on audit.v1 is passed to a real HAPI FHIR R4 server's `$validate`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from caremesh import envelope, topics
from caremesh.demo.scenario import territory_events
from caremesh.demo.territory import Territory
from caremesh.envelope import Envelope
from caremesh.kafka import admin as kafka_admin
from tests.support.hapi import Hapi
from tests.support.kafka import Namespace, Proc, free_port, worker_ready

pytestmark = pytest.mark.kafka

START = datetime(2026, 11, 1, tzinfo=UTC)
COORDINATOR = "care-coordination"
PATHWAYS = ("heart-failure", "type2-diabetes", "copd", "elderly-frailty")


def _headers(source: str, msg_id: str, event_type: str, hl7: bool) -> list[tuple[str, bytes]]:
    env = Envelope(
        msg_id,
        f"urn:caremesh:source:{source}",
        event_type,
        **({"content_type": envelope.HL7V2} if hl7 else {}),
    )
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]


def _feed(namespace: Namespace, territory: Territory) -> None:
    fhir, hl7 = [], []
    for n, event in enumerate(territory_events(territory, START, 1000.0)):
        if event.channel.startswith("consent"):
            continue
        key = event.patient.encode() or None
        msg_id = f"{event.idempotency_key}-{n}"
        if event.channel == "mllp":
            hl7.append((key, event.payload, _headers(event.source, msg_id, "org.hl7.v2", True)))
        else:
            rtype = event.resource_type or "Bundle"
            fhir.append(
                (
                    key,
                    event.payload,
                    _headers(event.source, msg_id, envelope.fhir_event_type(rtype), False),
                )
            )
    namespace.produce(topics.INGEST_FHIR, fhir)
    namespace.produce(topics.INGEST_HL7V2, hl7)


def _worker(namespace: Namespace, spawn: Callable[..., Proc], territory: Territory) -> None:
    orgs = [o.id for o in territory.organisation_settings()]
    kafka_admin.ensure_topics(
        namespace.kafka,
        [s for s in topics.catalogue(orgs, []) if s.name.startswith("outbox.")],
        partitions=namespace.partitions,
        replication_factor=1,
        prefix=namespace.prefix,
    )
    port = free_port()
    stages = ("hl7v2", "validate", "share", "pathways")
    env = namespace.env(
        CAREMESH_WORKER__WEB_PORT=str(port),
        CAREMESH_ORGANISATIONS=json.dumps(
            [o.model_dump(mode="json") for o in territory.organisation_settings()]
        ),
        CAREMESH_SOURCES=json.dumps(
            [
                {
                    **s.model_dump(mode="json"),
                    "token": s.token.get_secret_value() if s.token else None,
                }
                for s in territory.source_settings()
            ]
        ),
        CAREMESH_PATHWAYS__COORDINATORS=json.dumps(
            dict.fromkeys(PATHWAYS, f"Organization/{COORDINATOR}")
        ),
    )
    args = ["worker"] + [a for s in stages for a in ("--stage", s)]
    worker_ready(spawn("worker", args, env), port)


def _validate_all(hapi: Hapi, resources: list[dict[str, Any]]) -> dict[str, list[str]]:
    """HAPI's errors by resource type (each error once per type, with how often it came)."""
    found: dict[str, Counter[str]] = {}
    for resource in resources:
        for error in hapi.validate(resource):
            found.setdefault(resource["resourceType"], Counter())[error] += 1
    return {t: [f"{n} x {e}" for e, n in c.most_common()] for t, c in found.items()}


def test_hapi_finds_no_error_in_outboxes_alerts_and_audit_events(
    namespace: Namespace, spawn: Callable[..., Proc], hapi_r4: Hapi
) -> None:
    territory = Territory.generate(11, patients=30)
    _worker(namespace, spawn, territory)
    _feed(namespace, territory)

    delivered: list[dict[str, Any]] = []
    for org in territory.organisation_settings():
        for message in namespace.consume_all(topics.outbox_topic(org.id), settle=5.0, timeout=120):
            delivered.append(orjson.loads(message.value()))
    alerts = [orjson.loads(m.value()) for m in namespace.consume_all(topics.PATHWAY_ALERTS)]
    audits = [orjson.loads(m.value()) for m in namespace.consume_all(topics.AUDIT)]

    types = Counter(r["resourceType"] for r in delivered)
    assert {"Patient", "Encounter", "Observation", "Condition"} <= set(types), types
    assert alerts, "no pathway alert was raised"
    assert audits, "no AuditEvent was published"
    found = _validate_all(hapi_r4, delivered + alerts + audits)
    assert found == {}, (types, Counter(a["resourceType"] for a in alerts), len(audits))
