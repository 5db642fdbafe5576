"""`caremesh import`: NDJSON and Bundle files into the real broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from caremesh.connectors.bulk_import import ImportRejection, import_paths
from caremesh.envelope import body_message_id, message_id
from caremesh.errors import ConfigurationError
from caremesh.settings import Settings
from tests.integration.connectors.conftest import headers_of, read_topic
from tests.unit.connectors.connectors_synth import bundle, dumps, patient

pytestmark = pytest.mark.kafka


def ingest_topic(settings: Settings) -> str:
    return settings.kafka.topic_prefix + "ingest.fhir.v1"


def write_ndjson(path: Path, good: int, bad_at: dict[int, bytes]) -> list[bytes]:
    """`good` valid lines with bad lines inserted at the given (1-based) line numbers."""
    lines: list[bytes] = []
    good_lines = [
        dumps(patient(id=f"p{i}", birthDate=f"19{i % 100:02d}-01-01")) for i in range(good)
    ]
    it = iter(good_lines)
    while len(lines) < good + len(bad_at):
        lines.append(bad_at.get(len(lines) + 1) or next(it))
    path.write_bytes(b"\n".join(lines) + b"\n\n")  # a trailing blank line is ignored
    return good_lines


def test_an_ndjson_file_with_bad_lines(settings: Settings, tmp_path: Path) -> None:
    bad = {
        5: b"{not json",
        50: dumps(patient(birthDate="1950-13-45")),
        120: dumps({"resourceType": "NoSuchType"}),
    }
    good = write_ndjson(tmp_path / "patients.ndjson", 200, bad)
    summary = import_paths([tmp_path / "patients.ndjson"], settings, "synth-hosp", progress=False)
    assert (summary.sent, summary.rejected, summary.files) == (200, 3, 1)
    assert summary.rejections == (
        ImportRejection(str(tmp_path / "patients.ndjson"), 5, "invalid-json"),
        ImportRejection(str(tmp_path / "patients.ndjson"), 50, "validation-failed"),
        ImportRejection(str(tmp_path / "patients.ndjson"), 120, "unknown-resource-type"),
    )
    assert summary.by_code == {
        "invalid-json": 1,
        "validation-failed": 1,
        "unknown-resource-type": 1,
    }
    records = read_topic(settings.kafka.bootstrap_servers, ingest_topic(settings), 200)
    assert sorted(r.value() for r in records) == sorted(good)
    for record in records:
        headers = headers_of(record)
        assert headers["ce_id"] == body_message_id("synth-hosp", record.value())
        assert record.key() == headers["ce_id"].encode()
        assert headers["ce_source"] == "urn:caremesh:source:synth-hosp"


def test_a_directory_with_a_bundle_and_ndjson_with_progress(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_bytes(dumps(bundle("collection", identifier="B-9")))
    (tmp_path / "a.ndjson").write_bytes(dumps(patient()) + b"\n")
    (tmp_path / "notes.txt").write_bytes(b"ignored")
    summary = import_paths([tmp_path], settings, "synth-lab", progress=True, chunk_size=1)
    assert (summary.sent, summary.rejected, summary.files) == (2, 0, 2)
    records = read_topic(settings.kafka.bootstrap_servers, ingest_topic(settings), 2)
    ids = {headers_of(r)["ce_id"] for r in records}
    assert message_id("synth-lab", "urn:synth:bundle|B-9") in ids
    assert {headers_of(r).get("caremesh-fhir-release") for r in records} == {"R4"}


def test_a_missing_path_is_a_configuration_error(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        import_paths([tmp_path / "nope.ndjson"], settings, "synth-hosp", progress=False)
