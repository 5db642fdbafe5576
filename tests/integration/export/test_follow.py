"""`caremesh research follow` against the real broker: a DuckDB file kept up to date from a
study topic, incrementally, with retractions applied as deletes, and resumed after a kill
(SIGKILL mid-run) without a duplicate or a missing row."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from caremesh.research.records import retraction_value
from tests.support.kafka import Namespace

pytestmark = pytest.mark.kafka

TOPIC = "research.study-a.v1"


def _pseudonym(i: int) -> str:
    return f"{i:064x}"


def _patient(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": _pseudonym(i),
        "gender": "female" if i % 2 else "male",
        "birthDate": str(1940 + i % 50),
        "address": [{"postalCode": "69"}],
    }


def _obs(i: int, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"obs-{i}-{n}",
        "status": "final",
        "subject": {"reference": f"Patient/{_pseudonym(i)}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "valueQuantity": {"value": 70 + n, "unit": "kg"},
        "effectiveDateTime": "2026-03-01T08:00:00+01:00",
    }


def _produce(ns: Namespace, patients: range, observations: int) -> None:
    records = []
    for i in patients:
        key = _pseudonym(i).encode()
        records.append((key, orjson.dumps(_patient(i)), []))
        records.extend((key, orjson.dumps(_obs(i, n)), []) for n in range(observations))
    ns.produce(TOPIC, records)


def _follow(ns: Namespace, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "caremesh.cli.main", "research", "follow", "--study", "study-a",
        "--view", "patients", "--view", "observations", "--format", "duckdb", str(out), *extra,
    ]  # fmt: skip


def _run(ns: Namespace, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _follow(ns, out, "--until-end"),
        env=ns.env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _counts(out: Path) -> tuple[int, int, int]:
    with duckdb.connect(str(out), read_only=True) as db:
        patients = db.execute("SELECT count(*) FROM patients").fetchone()
        obs = db.execute("SELECT count(*), count(DISTINCT id) FROM observations").fetchone()
        assert patients is not None
        assert obs is not None
        return patients[0], obs[0], obs[1]


def test_follow_is_incremental_and_applies_retractions(
    namespace: Namespace, tmp_path: Path
) -> None:
    out = tmp_path / "study.duckdb"
    _produce(namespace, range(10), 2)
    done = _run(namespace, out)
    assert done.returncode == 0, done.stderr
    assert "read: 30  rows added: 30" in done.stdout
    assert _counts(out) == (10, 20, 20)
    with duckdb.connect(str(out), read_only=True) as db:
        cols = [c[0] for c in db.execute("DESCRIBE patients").fetchall()]
        assert cols == ["pseudonym", "birth_year", "sex", "departement", "deceased"]

    # more records and a retraction: only the new records are read, the retracted rows go
    _produce(namespace, range(10, 15), 2)
    gone = _pseudonym(3)
    namespace.produce(
        TOPIC, [(gone.encode(), retraction_value("study-a", gone, datetime.now(UTC)), [])]
    )
    done = _run(namespace, out)
    assert done.returncode == 0, done.stderr
    assert "read: 16  rows added: 15  rows deleted: 3  retractions: 1" in done.stdout
    assert _counts(out) == (14, 28, 28)
    with duckdb.connect(str(out), read_only=True) as db:
        assert db.execute(
            "SELECT count(*) FROM patients WHERE pseudonym = ?", [gone]
        ).fetchone() == (0,)

    # nothing new: nothing read
    done = _run(namespace, out)
    assert "read: 0  rows added: 0" in done.stdout
    assert _counts(out) == (14, 28, 28)

    # a file follows one study with one set of views
    other = subprocess.run(
        [
            sys.executable,
            "-m",
            "caremesh.cli.main",
            "research",
            "follow",
            "--study",
            "study-a",
            "--view",
            "conditions",
            str(out),
            "--until-end",
        ],
        env=namespace.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert other.returncode == 2
    assert "follows another study or other views" in other.stderr


def test_follow_resumes_after_a_kill_without_duplicates(
    namespace: Namespace, tmp_path: Path
) -> None:
    out = tmp_path / "study.duckdb"
    patients, observations = 400, 9
    _produce(namespace, range(patients), observations)
    proc = subprocess.Popen(
        _follow(namespace, out), env=namespace.env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(4)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = _run(namespace, out)
    assert done.returncode == 0, done.stderr
    assert _counts(out) == (patients, patients * observations, patients * observations)


def test_an_unknown_study_is_one_line_and_creates_no_file(
    namespace: Namespace, tmp_path: Path
) -> None:
    out = tmp_path / "x.duckdb"
    command = _follow(namespace, out, "--until-end")
    command[command.index("study-a")] = "no-such-study"
    done = subprocess.run(
        command, env=namespace.env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "study no-such-study: topic" in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert list(tmp_path.iterdir()) == []
