"""Research export core: record reading, retraction semantics, Parquet rows, atomic writers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from caremesh.errors import ConfigurationError, RejectedInputError
from caremesh.research.export import (
    PARQUET_COLUMNS,
    ExportFormat,
    RetractionIndex,
    flat_row,
    open_writer,
)
from caremesh.research.records import INVALID_RECORD, Retraction, StudyResource, read_record

P1, P2 = "a" * 64, "b" * 64
OBS: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o-1",
    "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
    "effectiveDateTime": "2026-03-02T00:00:00+01:00",
}


def test_records_are_resources_or_retractions() -> None:
    res = read_record(P1.encode(), orjson.dumps(OBS), 2, 7, "k1")
    assert res == StudyResource(P1, 2, 7, "k1", OBS)
    body = {"caremeshEvent": "retraction", "pseudonym": P1, "reason": "erasure"}
    assert read_record(P1.encode(), orjson.dumps(body), 2, 9, None) == Retraction(
        P1, 2, 9, "erasure"
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param(None, orjson.dumps(OBS), id="no-key"),
        pytest.param(P1.encode(), b"{not json", id="not-json"),
        pytest.param(P1.encode(), b"[1]", id="not-an-object"),
        pytest.param(P1.encode(), b'{"id": "x"}', id="no-resource-type"),
        pytest.param(P1.encode(), b'{"caremeshEvent": "retraction", "pseudonym": 3}', id="bad-r"),
    ],
)
def test_unreadable_records_are_rejected_with_coordinates_only(
    key: bytes | None, value: bytes
) -> None:
    with pytest.raises(RejectedInputError) as caught:
        read_record(key, value, 1, 42, None)
    assert caught.value.code == INVALID_RECORD
    assert "offset 42" in caught.value.detail
    assert P1 not in str(caught.value)


def test_retraction_drops_earlier_records_keeps_later_ones_and_other_pseudonyms() -> None:
    index = RetractionIndex()
    index.add(Retraction(P1, 0, 10, "erasure"))
    assert index.retracted(P1, 0, 9)
    assert not index.retracted(P1, 0, 11)  # a re-consent after the retraction
    assert not index.retracted(P2, 0, 9)
    assert index.retracted(P1, 1, 50)  # another partition: order unknown, dropped
    assert index.count == 1


@given(st.lists(st.tuples(st.sampled_from([P1, P2]), st.booleans()), max_size=30))
def test_kept_records_are_exactly_those_after_their_pseudonyms_last_retraction(
    events: list[tuple[str, bool]],
) -> None:
    index = RetractionIndex()
    for offset, (pseudonym, is_retraction) in enumerate(events):
        if is_retraction:
            index.add(Retraction(pseudonym, 0, offset, "x"))
    last = {
        p: max((o for o, (q, r) in enumerate(events) if q == p and r), default=-1) for p in (P1, P2)
    }
    for offset, (pseudonym, is_retraction) in enumerate(events):
        if not is_retraction:
            assert index.retracted(pseudonym, 0, offset) == (offset < last[pseudonym])


@pytest.mark.parametrize(
    ("resource", "effective", "code"),
    [
        (OBS, "2026-03-02T00:00:00+01:00", "http://loinc.org|4548-4"),
        (
            {"resourceType": "Encounter", "id": "e", "period": {"start": "2026-01-01"}},
            "2026-01-01",
            None,
        ),
        (
            {
                "resourceType": "Condition",
                "onsetDateTime": "2025",
                "code": {"coding": [{"code": "E11"}]},
            },
            "2025",
            "|E11",
        ),
        ({"resourceType": "Patient", "birthDate": "1961"}, None, None),
    ],
)
def test_flat_rows(resource: dict[str, Any], effective: str | None, code: str | None) -> None:
    row = flat_row(StudyResource(P1, 0, 0, "k", resource))
    assert tuple(row) == PARQUET_COLUMNS
    assert (row["effective"], row["code"], row["keyId"], row["pseudonym"]) == (
        effective,
        code,
        "k",
        P1,
    )
    assert row["resourceType"] == resource["resourceType"]
    assert orjson.loads(row["resource"] or "") == resource


@pytest.mark.parametrize("fmt", [ExportFormat.NDJSON, ExportFormat.PARQUET])
def test_a_writer_shows_its_file_only_once_committed(tmp_path: Path, fmt: ExportFormat) -> None:
    out = tmp_path / f"study.{fmt.value}"
    writer = open_writer(fmt, out)
    writer.write(StudyResource(P1, 0, 0, None, OBS))
    assert not out.exists()
    writer.commit()
    if fmt is ExportFormat.NDJSON:
        assert [orjson.loads(x) for x in out.read_bytes().splitlines()] == [OBS]
    else:
        assert pq.read_table(out).column("id").to_pylist() == ["o-1"]
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_an_aborted_writer_leaves_nothing(tmp_path: Path) -> None:
    writer = open_writer(ExportFormat.PARQUET, tmp_path / "x.parquet")
    writer.write(StudyResource(P1, 0, 0, None, OBS))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "where", [pytest.param("missing/x.ndjson", id="no-folder"), pytest.param(".", id="a-folder")]
)
def test_unwritable_outputs_fail_before_anything_is_read(tmp_path: Path, where: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot write"):
        open_writer(ExportFormat.NDJSON, tmp_path / where)
