"""The e2e baseline runs the stages' own per-message work: with the benchmark's study (consent
default permit) every resource is pseudonymised and each new patient's vault record sealed,
as the research stage does (it once evaluated the study with the TREAT policy, denied, and
measured a loop that never pseudonymised)."""

from __future__ import annotations

import pytest
from bench import pipeline

from caremesh.fhir.ingest import process_ingest
from caremesh.settings import Settings


def test_research_baseline_pseudonymises_and_seals_like_the_stage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in pipeline.pipeline_env("unit.").items():
        monkeypatch.setenv(name, value)
    loop = pipeline.FunctionLoop(Settings())
    records = [
        rec
        for n, message in enumerate(pipeline.workload(20, 2)[-22:])
        for rec in process_ingest(message, "bench", f"m{n}", None, {}).records
    ]
    assert records
    sealed: list[str] = []
    monkeypatch.setattr(
        pipeline, "seal_record", lambda keys, patient, pseudonyms: sealed.append(patient)
    )
    written = [loop._research(r.key, r.value, r.message_id) for r in records]
    assert written == [2] * len(records)  # the decision's audit and the pseudonymised record
    assert sorted(set(sealed)) == sorted(sealed) == sorted({r.key for r in records})
