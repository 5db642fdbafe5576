"""The follower's DuckDB file (caremesh.research.follow): rows and offsets commit together, a
failed batch leaves both as they were, retractions delete, and a file keeps to its study."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from caremesh.errors import ConfigurationError
from caremesh.research.follow import FollowStore
from caremesh.research.records import Retraction, StudyResource
from caremesh.research.sql_on_fhir import ViewEvaluationError, find_view, load_view

P1, P2 = "a" * 64, "b" * 64


def _patient(pseudonym: str, offset: int, **extra: object) -> StudyResource:
    resource = {"resourceType": "Patient", "id": pseudonym, "gender": "female", **extra}
    return StudyResource(pseudonym, 0, offset, None, resource)


def _rows(path: Path) -> list[tuple[object, ...]]:
    with duckdb.connect(str(path), read_only=True) as db:
        return db.execute("SELECT pseudonym, sex FROM patients ORDER BY pseudonym").fetchall()


def test_a_failed_batch_leaves_rows_and_offsets_as_they_were(tmp_path: Path) -> None:
    path = tmp_path / "f.duckdb"
    strict = load_view(
        {
            "name": "patients",
            "resource": "Patient",
            "select": [
                {
                    "column": [
                        {"name": "pseudonym", "path": "getResourceKey()"},
                        {"name": "sex", "path": "gender"},
                        {"name": "born", "path": "birthDate", "type": "integer"},
                    ]
                }
            ],
        }
    )
    store = FollowStore(path, "study-a", [strict])
    assert store.apply([_patient(P1, 0)], {0: 1}) == (1, 0)
    with pytest.raises(ViewEvaluationError):
        store.apply([_patient(P2, 1), _patient(P2, 2, birthDate="1950-01")], {0: 3})
    assert store.offsets() == {0: 1}
    assert store.apply([_patient(P2, 1, gender="male")], {0: 2}) == (1, 0)  # nothing stray
    store.close()
    assert _rows(path) == [(P1, "female"), (P2, "male")]


def test_retractions_delete_and_a_file_keeps_to_its_study(tmp_path: Path) -> None:
    path = tmp_path / "f.duckdb"
    store = FollowStore(path, "study-a", [find_view("patients")])
    retraction = Retraction(P1, 0, 2, "consent-withdrawn")
    assert store.apply([_patient(P1, 0), _patient(P2, 1), retraction], {0: 3}) == (2, 1)
    assert store.apply([_patient(P1, 3)], {0: 4}) == (1, 0)  # a re-consent comes back
    assert store.offsets() == {0: 4}
    store.close()
    assert _rows(path) == [(P1, "female"), (P2, "female")]
    with pytest.raises(ConfigurationError, match="another study or other views"):
        FollowStore(path, "study-b", [find_view("patients")])
    with pytest.raises(ConfigurationError, match="another study or other views"):
        FollowStore(path, "study-a", [find_view("patients"), find_view("observations")])
    reopened = FollowStore(path, "study-a", [find_view("patients")])
    assert reopened.offsets() == {0: 4}
    reopened.close()
