"""View tables (caremesh.research.tables): typed columns, files and DuckDB tables that appear
only on commit, nothing left after an abort, and the formats that need views."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from caremesh.errors import ConfigurationError
from caremesh.research.export import ExportFormat, open_writer
from caremesh.research.records import StudyResource
from caremesh.research.sql_on_fhir import ViewEvaluationError, find_view, load_view

P1 = "a" * 64
PATIENT = {"resourceType": "Patient", "id": P1, "gender": "male", "birthDate": "1961"}
OBS = {
    "resourceType": "Observation",
    "id": "o-1",
    "subject": {"reference": f"Patient/{P1}"},
    "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
    "valueQuantity": {"value": 7.2, "unit": "%"},
}


def _records() -> list[StudyResource]:
    return [StudyResource(P1, 0, 0, None, PATIENT), StudyResource(P1, 0, 1, None, OBS)]


@pytest.mark.parametrize("fmt", [ExportFormat.PARQUET, ExportFormat.CSV, ExportFormat.DUCKDB])
def test_view_tables_appear_only_once_committed(tmp_path: Path, fmt: ExportFormat) -> None:
    out = tmp_path / ("study.duckdb" if fmt is ExportFormat.DUCKDB else "tables")
    writer = open_writer(fmt, out, [find_view("patients"), find_view("observations")])
    for record in _records():
        writer.write(record)
    assert not out.exists()
    writer.commit()
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    if fmt is ExportFormat.DUCKDB:
        with duckdb.connect(str(out), read_only=True) as db:
            assert db.execute("SELECT pseudonym, birth_year, sex FROM patients").fetchall() == [
                (P1, "1961", "male")
            ]
            assert db.execute("SELECT value, unit FROM observations").fetchall() == [(7.2, "%")]
    elif fmt is ExportFormat.PARQUET:
        table = pq.read_table(out / "observations.parquet")
        assert str(table.schema.field("value").type) == "double"
        assert table.column("code").to_pylist() == ["4548-4"]
    else:
        with (out / "patients.csv").open(newline="") as handle:
            assert [r["birth_year"] for r in csv.DictReader(handle)] == ["1961"]


def test_an_aborted_view_export_leaves_nothing(tmp_path: Path) -> None:
    writer = open_writer(ExportFormat.DUCKDB, tmp_path / "x.duckdb", [find_view("patients")])
    writer.write(_records()[0])
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_formats_and_views_must_agree(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="give at least one --view"):
        open_writer(ExportFormat.CSV, tmp_path / "x")
    with pytest.raises(ConfigurationError, match="use --format parquet, csv or duckdb"):
        open_writer(ExportFormat.NDJSON, tmp_path / "x", [find_view("patients")])
    twice = [find_view("patients"), load_view({**_patients_json(), "title": "again"})]
    with pytest.raises(ConfigurationError, match="same table: patients"):
        open_writer(ExportFormat.DUCKDB, tmp_path / "x.duckdb", twice)
    assert list(tmp_path.iterdir()) == []


def _patients_json() -> dict[str, object]:
    return {
        "name": "patients",
        "resource": "Patient",
        "select": [{"column": [{"name": "id", "path": "id"}]}],
    }


def test_a_value_of_the_wrong_type_is_an_error_not_a_null(tmp_path: Path) -> None:
    view = load_view(
        {
            "resource": "Patient",
            "select": [{"column": [{"name": "n", "path": "gender", "type": "integer"}]}],
        }
    )
    writer = open_writer(ExportFormat.DUCKDB, tmp_path / "x.duckdb", [view])
    with pytest.raises(ViewEvaluationError, match="column n is not of type integer"):
        writer.write(_records()[0])
    writer.abort()
