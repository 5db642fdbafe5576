"""`caremesh research export` against the real broker: NDJSON and Parquet, retractions applied,
an empty study, an unknown study and an unwritable output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from caremesh import envelope
from tests.support.kafka import Namespace

pytestmark = pytest.mark.kafka

KEPT, RETRACTED, RECONSENT = "1" * 64, "2" * 64, "3" * 64


def _obs(n: int, day: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"obs-{n}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "effectiveDateTime": f"2026-03-{day}T00:00:00+01:00",
        "valueQuantity": {"value": 7.0 + n, "unit": "%"},
    }


def _retraction(pseudonym: str) -> dict[str, Any]:
    return {
        "caremeshEvent": "retraction",
        "study": "study-a",
        "pseudonym": pseudonym,
        "reason": "erasure",
        "at": "2026-03-05T10:00:00+00:00",
    }


def _key_id(kid: str) -> list[tuple[str, bytes]]:
    return [(envelope.H_KEY_ID, kid.encode())]


def _fill(ns: Namespace) -> dict[str, list[dict[str, Any]]]:
    """Writes study-a; returns the resources an export must keep, per pseudonym."""
    kept = [_obs(1, "01"), _obs(2, "02")]
    records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = [
        (KEPT.encode(), orjson.dumps(kept[0]), _key_id("k1")),
        (RETRACTED.encode(), orjson.dumps(_obs(3, "03")), _key_id("k1")),
        (RECONSENT.encode(), orjson.dumps(_obs(4, "04")), _key_id("k1")),
        (RETRACTED.encode(), orjson.dumps(_obs(5, "05")), _key_id("k1")),
        (RETRACTED.encode(), orjson.dumps(_retraction(RETRACTED)), []),
        (RECONSENT.encode(), orjson.dumps(_retraction(RECONSENT)), []),
        (KEPT.encode(), orjson.dumps(kept[1]), _key_id("k2")),
        (RECONSENT.encode(), orjson.dumps(_obs(6, "06")), _key_id("k2")),  # after: kept
    ]
    ns.produce("research.study-a.v1", records)
    return {KEPT: kept, RECONSENT: [_obs(6, "06")]}


def _export(ns: Namespace, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "caremesh.cli.main", "research", "export", *args],
        env=ns.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_ndjson_and_parquet_exports_apply_retractions(namespace: Namespace, tmp_path: Path) -> None:
    expected = _fill(namespace)
    ndjson = tmp_path / "a.ndjson"
    done = _export(
        namespace, "--study", "study-a", "--output", str(ndjson), "--from-beginning", "--until-end"
    )
    assert done.returncode == 0, done.stderr
    assert "records: 3  pseudonyms: 2  retracted: 3  retractions: 2" in done.stdout
    lines = [orjson.loads(line) for line in ndjson.read_bytes().splitlines()]
    want = [r for rs in expected.values() for r in rs]
    assert sorted(lines, key=lambda r: r["id"]) == sorted(want, key=lambda r: r["id"])

    parquet = tmp_path / "a.parquet"
    done = _export(
        namespace, "--study", "study-a", "--format", "parquet", "--output", str(parquet), "--quiet"
    )
    assert done.returncode == 0, done.stderr
    table = pq.read_table(parquet)
    assert table.column_names == [
        "pseudonym",
        "resourceType",
        "id",
        "keyId",
        "effective",
        "code",
        "resource",
    ]
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert [(r["pseudonym"], r["id"], r["keyId"]) for r in rows] == [
        (KEPT, "obs-1", "k1"),
        (KEPT, "obs-2", "k2"),
        (RECONSENT, "obs-6", "k2"),
    ]
    assert RETRACTED not in table.column("pseudonym").to_pylist()
    assert rows[0]["effective"] == "2026-03-01T00:00:00+01:00"
    assert rows[0]["code"] == "http://loinc.org|4548-4"
    assert orjson.loads(rows[0]["resource"]) == expected[KEPT][0]


@pytest.mark.parametrize("fmt", ["ndjson", "parquet"])
def test_an_empty_study_exports_an_empty_file(
    namespace: Namespace, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"b.{fmt}"
    done = _export(namespace, "--study", "study-b", "--format", fmt, "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert "records: 0  pseudonyms: 0  retracted: 0" in done.stdout
    if fmt == "ndjson":
        assert out.read_bytes() == b""
    else:
        assert pq.read_table(out).num_rows == 0


def test_an_unknown_study_is_a_clear_error(namespace: Namespace, tmp_path: Path) -> None:
    out = tmp_path / "x.ndjson"
    done = _export(namespace, "--study", "no-such-study", "--output", str(out))
    assert done.returncode == 2  # the user's mistake: one line, exit 2
    assert "study no-such-study: topic" in done.stderr
    assert "does not exist" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no partial or empty file left behind


def test_an_unwritable_output_is_a_clear_error(namespace: Namespace, tmp_path: Path) -> None:
    out = tmp_path / "missing" / "x.ndjson"
    done = _export(namespace, "--study", "study-a", "--output", str(out))
    assert done.returncode == 2
    assert f"cannot write {out}" in done.stderr
