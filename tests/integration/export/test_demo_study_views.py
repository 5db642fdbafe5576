"""The shipped SQL on FHIR views over the demo territory's own study streams.

A synthetic territory's events (the consents it records, FHIR load Bundles and resources, ADT and
ORU over HL7 v2) go through a real worker (hl7v2, validate, research) on the real broker; then
`caremesh research export --view ... --format duckdb` flattens each study (the opt-out
observatory and the opt-in diabetes cohort). Each table has one row per study record of its
resource type, no cell holds anything that names a territory patient (family or given name,
INS, local record number, street line), and DuckDB answers a join across the tables.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson
import pytest

from caremesh import envelope, topics
from caremesh.demo.scenario import territory_events
from caremesh.demo.territory import Territory
from caremesh.envelope import Envelope
from caremesh.kafka import admin as kafka_admin
from tests.support.kafka import Namespace, Proc, free_port, worker_ready

pytestmark = pytest.mark.kafka

START = datetime(2026, 11, 1, tzinfo=UTC)
TABLES = {
    "patients": "Patient",
    "observations": "Observation",
    "encounters": "Encounter",
    "conditions": "Condition",
}


def _headers(source: str, msg_id: str, event_type: str, hl7: bool) -> list[tuple[str, bytes]]:
    extra = {"content_type": envelope.HL7V2} if hl7 else {}
    env = Envelope(msg_id, f"urn:caremesh:source:{source}", event_type, **extra)
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]


def _feed(namespace: Namespace, territory: Territory) -> None:
    consents, fhir, hl7 = [], [], []
    for n, event in enumerate(territory_events(territory, START, 1000.0)):
        key = event.patient.encode() or None
        msg_id = f"{event.idempotency_key}-{n}"
        if event.channel == "consent":
            if event.resource_type == "Consent":  # withdrawals go through the consent API
                consents.append((key, event.payload, []))
        elif event.channel == "mllp":
            hl7.append((key, event.payload, _headers(event.source, msg_id, "org.hl7.v2", True)))
        else:
            rtype = envelope.fhir_event_type(event.resource_type or "Bundle")
            fhir.append((key, event.payload, _headers(event.source, msg_id, rtype, False)))
    namespace.produce(topics.CONSENT_EVENTS, consents)
    namespace.produce(topics.INGEST_FHIR, fhir)
    namespace.produce(topics.INGEST_HL7V2, hl7)


def _worker(namespace: Namespace, spawn: Callable[..., Proc], territory: Territory) -> None:
    studies = territory.study_settings()
    kafka_admin.ensure_topics(
        namespace.kafka,
        [
            s
            for s in topics.catalogue([], [(s.id, s.retention_days) for s in studies])
            if s.name.startswith("research.")
        ],
        partitions=namespace.partitions,
        replication_factor=1,
        prefix=namespace.prefix,
    )
    port = free_port()
    env = namespace.env(
        CAREMESH_WORKER__WEB_PORT=str(port),
        CAREMESH_STUDIES=json.dumps([s.model_dump(mode="json") for s in studies]),
        CAREMESH_SOURCES=json.dumps(
            [
                {
                    **s.model_dump(mode="json"),
                    "token": s.token.get_secret_value() if s.token else None,
                }
                for s in territory.source_settings()
            ]
        ),
        CAREMESH_PSEUDONYM__MASTER_KEY=secrets.token_hex(32),
        CAREMESH_LOG_LEVEL="WARNING",
    )
    args = ["worker", "--stage", "hl7v2", "--stage", "validate", "--stage", "research"]
    worker_ready(spawn("worker", args, env), port)


def _export(namespace: Namespace, study: str, out: Path) -> subprocess.CompletedProcess[str]:
    views = [a for name in TABLES for a in ("--view", name)]
    return subprocess.run(
        [
            *(sys.executable, "-m", "caremesh.cli.main", "research", "export", "--study", study),
            *(*views, "--format", "duckdb", "--quiet", str(out)),
        ],
        env=namespace.env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _identifying(territory: Territory) -> set[str]:
    out: set[str] = set()
    for p in territory.patients:
        out |= {p.ins, p.local_id, p.family, p.line}
        out |= {g for g in p.given.split() if len(g) > 3}
    return {v for v in out if v}


def test_shipped_views_over_the_demo_territorys_study_streams(
    namespace: Namespace, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    territory = Territory.generate(7, patients=40)
    _worker(namespace, spawn, territory)
    _feed(namespace, territory)
    secrets_in_cells = _identifying(territory)

    for study in (s.id for s in territory.study_settings()):
        records = namespace.consume_all(topics.research_topic(study), settle=6.0, timeout=180)
        kinds = Counter(orjson.loads(m.value()).get("resourceType") for m in records)
        assert kinds["Patient"] > 0, (study, kinds)
        assert kinds["Observation"] > 0, (study, kinds)
        print(f"{study}: {dict(kinds)}")
        out = tmp_path / f"{study}.duckdb"
        done = _export(namespace, study, out)
        assert done.returncode == 0, done.stderr[-2000:]
        with duckdb.connect(str(out), read_only=True) as db:
            for table, rtype in TABLES.items():
                (rows,) = db.execute(f"SELECT count(*) FROM {table}").fetchone() or (0,)
                assert rows == kinds[rtype], (study, table, rows, kinds)
                cells = repr(db.execute(f"SELECT * FROM {table}").fetchall())
                leaked = sorted(v for v in secrets_in_cells if v in cells)
                assert leaked == [], (study, table, len(leaked))
            joined = db.execute(
                "SELECT count(*) FROM observations o JOIN patients p ON p.pseudonym = o.pseudonym"
            ).fetchone()
            assert joined is not None
            assert joined[0] > 0, study
