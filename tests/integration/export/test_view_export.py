"""`caremesh research export --view` against the real broker and the live research stage:
the shipped SQL on FHIR views over a study stream made from canary patients give one row per
record (minus retractions) in DuckDB, Parquet and CSV, no canary in any cell, and a re-export
after a retraction drops the retracted pseudonym's rows. Bad views and unknown studies are one
line and exit 2."""

from __future__ import annotations

import csv
import json
import secrets
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest

from caremesh import topics
from caremesh.research.records import retraction_value
from caremesh.research.sql_on_fhir import shipped_views
from tests.integration.research.test_leak_scan import (
    INS,
    MARK,
    STUDIES,
    canary,
    encounter,
    observation,
    patient,
)
from tests.support.kafka import Namespace, Proc, free_port, worker_ready

pytestmark = pytest.mark.kafka

PATIENTS = 12
TABLES = {
    "patients": "Patient",
    "observations": "Observation",
    "encounters": "Encounter",
    "conditions": "Condition",
    "medication_requests": "MedicationRequest",
    "medication_statements": "MedicationStatement",
}
DIRECT_COLUMNS = {"name", "family", "given", "telecom", "phone", "email", "address", "line", "ins"}


def _subject(i: int) -> dict[str, Any]:
    return {
        "reference": f"Patient/{canary('PID', i)}",
        "identifier": {"system": INS, "value": canary("INS", i)},
        "display": canary("SDISP", i),
    }


def condition(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": canary("COND", i),
        "text": {"status": "generated", "div": f"<div>{canary('CNARR', i)}</div>"},
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I50.0"}]},
        "subject": _subject(i),
        "onsetDateTime": "2025-11-02T10:00:00+01:00",
        "note": [{"text": canary("CNOTE", i)}],
    }


def medication_request(i: int) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": canary("MEDR", i),
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.whocc.no/atc", "code": "C03CA01"}]
        },
        "subject": _subject(i),
        "authoredOn": "2026-01-10",
        "requester": {"display": canary("DOC", i)},
        "dosageInstruction": [
            {
                "text": canary("DTXT", i),
                "doseAndRate": [{"doseQuantity": {"value": 40, "unit": "mg"}}],
            }
        ],
    }


def medication_statement(i: int) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "id": canary("MEDS", i),
        "status": "active",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.whocc.no/atc", "code": "A10BA02"}]
        },
        "subject": _subject(i),
        "effectivePeriod": {"start": "2025-06-01", "end": "2026-01-01"},
    }


MAKERS = (patient, observation, encounter, condition, medication_request, medication_statement)


def _export(ns: Namespace, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caremesh.cli.main", "research", "export", *args],
        env=ns.env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _views() -> list[str]:
    return [arg for name in TABLES for arg in ("--view", name)]


def _study_stream(ns: Namespace, spawn: Callable[..., Proc]) -> list[str]:
    """Runs the research stage over canary patients; returns study-a's pseudonyms."""
    port = free_port()
    worker = spawn(
        "worker",
        ["worker", "--stage", "research"],
        ns.env(
            CAREMESH_WORKER__WEB_PORT=str(port),
            CAREMESH_STUDIES=json.dumps(STUDIES),
            CAREMESH_PSEUDONYM__MASTER_KEY=secrets.token_hex(32),
            CAREMESH_LOG_LEVEL="WARNING",
        ),
    )
    worker_ready(worker, port)
    records = []
    for i in range(PATIENTS):
        key = canary("INS", i).encode()
        headers = [("ce_id", canary("CEID", i).encode()), ("caremesh-source", b"hosp")]
        records.extend((key, orjson.dumps(make(i)), list(headers)) for make in MAKERS)
    ns.produce(topics.CLINICAL_FHIR, records)
    expected = len(MAKERS) * PATIENTS
    msgs = ns.consume(topics.research_topic("study-a"), expected, timeout=120)
    assert len(msgs) == expected, worker.log()[-2000:]
    kinds = sorted(orjson.loads(m.value())["resourceType"] for m in msgs)
    assert kinds == sorted(t for t in TABLES.values() for _ in range(PATIENTS))
    return sorted({m.key().decode() for m in msgs})


def _no_canary(rows: list[tuple[Any, ...]]) -> None:
    for row in rows:
        assert MARK not in repr(row).upper()


def test_shipped_views_flatten_a_study_stream_and_a_retraction_removes_rows(
    namespace: Namespace, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    pseudonyms = _study_stream(namespace, spawn)
    assert len(pseudonyms) == PATIENTS
    assert set(TABLES) <= set(shipped_views())
    out = tmp_path / "study-a.duckdb"
    done = _export(namespace, "--study", "study-a", *_views(), "--format", "duckdb", str(out))
    assert done.returncode == 0, done.stderr
    assert f"records: {len(MAKERS) * PATIENTS}  pseudonyms: {PATIENTS}" in done.stdout
    with duckdb.connect(str(out), read_only=True) as db:
        for table in TABLES:
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (PATIENTS,)
            names = [c[0] for c in db.execute(f"DESCRIBE {table}").fetchall()]
            assert not {n.lower() for n in names} & DIRECT_COLUMNS
            _no_canary(db.execute(f"SELECT * FROM {table}").fetchall())
        # one pseudonym per patient, everywhere: every observation joins its patient
        joined = db.execute(
            "SELECT p.sex, p.birth_year, o.code, o.value, o.unit FROM observations o "
            "JOIN patients p ON p.pseudonym = o.pseudonym"
        ).fetchall()
        assert len(joined) == PATIENTS
        assert sorted(r[0] for r in db.execute("SELECT pseudonym FROM patients").fetchall()) == (
            pseudonyms
        )
        years = db.execute("SELECT DISTINCT length(birth_year) FROM patients").fetchall()
        assert years == [(4,)]
        departements = db.execute("SELECT DISTINCT length(departement) FROM patients").fetchall()
        assert all(d[0] in {None, 2} for d in departements)
        statins = db.execute(
            "SELECT count(DISTINCT pseudonym) FROM medication_requests "
            "WHERE medication_code = 'C03CA01' AND dose_value = 40"
        ).fetchone()
        assert statins == (PATIENTS,)

    # a withdrawal: the pseudonym's retraction, then a re-export over the same file
    gone = pseudonyms[0]
    namespace.produce(
        topics.research_topic("study-a"),
        [(gone.encode(), retraction_value("study-a", gone, datetime.now(UTC)), [])],
    )
    done = _export(namespace, "--study", "study-a", *_views(), "--format", "duckdb", str(out))
    assert done.returncode == 0, done.stderr
    assert f"retracted: {len(MAKERS)}  retractions: 1" in done.stdout
    with duckdb.connect(str(out), read_only=True) as db:
        for table in TABLES:
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (PATIENTS - 1,)
            assert gone not in repr(db.execute(f"SELECT * FROM {table}").fetchall())

    # the same tables as Parquet files and CSV files in a directory
    for fmt in ("parquet", "csv"):
        folder = tmp_path / fmt
        done = _export(namespace, "--study", "study-a", *_views(), "--format", fmt, str(folder))
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{t}.{fmt}" for t in TABLES)
        for table in TABLES:
            path = folder / f"{table}.{fmt}"
            if fmt == "parquet":
                rows = pq.read_table(path).to_pylist()
            else:
                with path.open(newline="") as handle:
                    rows = list(csv.DictReader(handle))
            assert len(rows) == PATIENTS - 1
            _no_canary([tuple(r.values()) for r in rows])
            assert gone not in repr(rows)


def test_bad_views_and_unknown_studies_are_one_line_and_exit_2(
    namespace: Namespace, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"resource": "Patient", "select": [{"forEach": "@@"}]}')
    cases = [
        (["--view", str(tmp_path / "missing.json")], "cannot read view"),
        (["--view", str(broken)], "is not valid FHIRPath"),
        (["--view", "patients", "--format", "ndjson"], "use --format parquet, csv or duckdb"),
        (["--format", "duckdb"], "give at least one --view"),
    ]
    for args, message in cases:
        done = _export(namespace, "--study", "study-a", *args, str(tmp_path / "x.duckdb"))
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert done.stderr.strip().count("\n") == 0, done.stderr
    done = _export(
        namespace,
        "--study",
        "no-such-study",
        "--view",
        "patients",
        "--format",
        "duckdb",
        str(tmp_path / "x.duckdb"),
    )
    assert done.returncode == 2
    assert "study no-such-study: topic" in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.json"]  # nothing left behind
