"""The compiled pseudonymisation engine (`caremesh.pseudonym.native`): used only while it matches
the
sources, and it gives exactly what the pure Python engine gives."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from caremesh.pseudonym import engine, native

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
EXTENSION = tuple(importlib.machinery.EXTENSION_SUFFIXES)

# The same deterministic run in this process and in a pure Python one: both presets on
# synthetic resources (bench corpus shapes, a Bundle with a contained resource, extensions).
_SCRIPT = r"""
import json, sys
from datetime import date
from caremesh.pseudonym import engine, load_preset, study_anonymizer

def resources():
    patient = {
        "resourceType": "Patient", "id": "pat-1",
        "text": {"status": "generated", "div": "<div>Synthia Canary</div>"},
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "290017512345678"}],
        "name": [{"use": "official", "family": "Canary", "given": ["Synthia"]}],
        "telecom": [{"system": "phone", "value": "0102030405"}],
        "gender": "female", "birthDate": "1931-06-15",
        "_birthDate": {"extension": [{"url": "http://example.org/x", "valueString": "y"}]},
        "address": [{"line": ["3 rue des Lilas"], "city": "Lyon", "postalCode": "69007"}],
        "managingOrganization": {"reference": "Organization/org-1", "display": "Clinique"},
    }
    observation = {
        "resourceType": "Observation", "id": "obs-1", "status": "final",
        "contained": [{"resourceType": "Practitioner", "id": "pr", "name": [{"family": "Doc"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}], "text": "Weight"},
        "subject": {"reference": "Patient/pat-1", "display": "Synthia Canary"},
        "performer": [{"reference": "#pr"}],
        "effectiveDateTime": "2026-02-11T01:30:00+01:00",
        "note": [{"text": "free text"}],
    }
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0d9a0c4e-0f52-4a2b-9c8d-2b1e8f0e6a11", "resource": patient},
        {"resource": observation},
    ]}
    return [patient, observation, bundle]

out = {"engine": engine.__file__, "results": []}
for preset in ("gdpr-research", "hipaa-safe-harbor"):
    anonymizer = study_anonymizer(
        "native-test", bytes(range(32)), load_preset(preset), today=date(2026, 1, 15)
    )
    for resource in resources():
        out["results"].append(anonymizer.apply(resource, patient_key="290017512345678"))
json.dump(out, sys.stdout, sort_keys=True)
"""


def _run(env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _require_build() -> None:
    if native.status().active:
        return
    if IN_CI:  # bootstrap builds it: CI must exercise the compiled engine
        pytest.fail(f"the compiled engine is not in use in CI: {native.status().reason}")
    pytest.skip(f"no compiled engine here ({native.status().reason})")


def test_the_compiled_engine_runs_when_its_build_is_fresh() -> None:
    _require_build()
    assert str(engine.__file__).endswith(EXTENSION)
    assert str(engine.__file__).startswith(str(native.directory()))


def test_compiled_and_pure_engines_give_the_same_results() -> None:
    _require_build()
    compiled = _run({})
    pure = _run({"CAREMESH_NATIVE": "0"})
    assert compiled["engine"].endswith(EXTENSION)
    assert pure["engine"].endswith(".py")
    assert len(compiled["results"]) == 6
    assert compiled["results"] == pure["results"]
    text = json.dumps(compiled["results"])
    assert "Canary" not in text
    assert "290017512345678" not in text


def test_an_edited_source_runs_as_python_not_as_the_old_build(tmp_path: Path) -> None:
    _require_build()
    stale = tmp_path / "native"
    shutil.copytree(native.directory(), stale)
    manifest = json.loads((stale / native.MANIFEST).read_text())
    manifest["sources"]["caremesh.pseudonym.engine"] = "0" * 64  # as if engine.py changed
    (stale / native.MANIFEST).write_text(json.dumps(manifest))
    ran = _run({"CAREMESH_NATIVE_DIR": str(stale)})
    assert ran["engine"].endswith(".py")


def _fake_build(where: Path) -> dict[str, Any]:
    files = {}
    for module in native.MODULES:
        relative = Path(*module.split(".")).with_suffix(EXTENSION[0])
        (where / relative).parent.mkdir(parents=True, exist_ok=True)
        (where / relative).write_bytes(b"")
        files[module] = str(relative)
    manifest = {
        "abi": native.abi(),
        "sources": {m: native.digest(native.source(m)) for m in native.MODULES},
        "files": files,
    }
    (where / native.MANIFEST).write_text(json.dumps(manifest))
    return manifest


def test_check_accepts_only_a_complete_build_of_these_sources_for_this_python(
    tmp_path: Path,
) -> None:
    assert native.check(tmp_path)[0] == "not built: run `caremesh native build`"
    manifest = _fake_build(tmp_path)
    reason, files = native.check(tmp_path)
    assert reason is None
    assert set(files) == set(native.MODULES)

    def with_change(change: dict[str, Any]) -> str | None:
        (tmp_path / native.MANIFEST).write_text(json.dumps({**manifest, **change}))
        return native.check(tmp_path)[0]

    edited = {**manifest["sources"], "caremesh.pseudonym.plan": "f" * 64}
    assert with_change({"sources": edited}) == (
        "out of date with the sources: run `caremesh native build`"
    )
    assert with_change({"abi": "cpython-312-x86_64-linux-gnu"}) == (
        "built for another Python: run `caremesh native build`"
    )
    fewer = {k: v for k, v in manifest["sources"].items() if k != "caremesh.pseudonym.output"}
    assert with_change({"sources": fewer}) == "built for other modules: run `caremesh native build`"
    with_change({})
    (tmp_path / manifest["files"]["caremesh.pseudonym.values"]).unlink()
    assert native.check(tmp_path)[0] == "incomplete build: run `caremesh native build`"
    (tmp_path / native.MANIFEST).write_text("{not json")
    assert native.check(tmp_path)[0] == "unreadable build manifest: run `caremesh native build`"


def test_native_off_and_status_exit_codes() -> None:
    pure = _run({"CAREMESH_NATIVE": "0"})
    assert pure["engine"].endswith(".py")
    off = subprocess.run(
        [sys.executable, "-m", "caremesh.cli.main", "native", "status"],
        env={**os.environ, "CAREMESH_NATIVE": "0"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert off.returncode == 3
    assert "pure Python (CAREMESH_NATIVE=0)" in off.stdout
