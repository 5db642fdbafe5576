"""The Docker image's install step (`scripts/install-prefix.sh`, the Dockerfile's build stage):
caremesh installed into a prefix of its own, with the pseudonymisation engine compiled and in use
from that prefix alone.

Runs the script as the image does, from a bare interpreter (a fresh venv stands in for the
base image's Python), then runs `caremesh pseudonymise` with nothing on the path but the prefix.
Needs a C compiler and PyPI (or pip's cache), as the image build does."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import orjson

from caremesh.fhir.patient_key import INS_SYSTEM

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CAREMESH_", "PYTHON", "VIRTUAL_ENV"))
    }
    return {**env, **extra}


def test_the_image_install_runs_the_compiled_engine_from_its_prefix(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", str(bare)], check=True)
    python = bare / "bin" / "python"
    prefix = tmp_path / "install"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install-prefix.sh"), str(prefix)],
        env=_env(PYTHON=str(python)),
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "pseudonymisation engine: compiled (mypyc" in done.stdout
    site = Path(
        sysconfig.get_path(
            "platlib", "posix_prefix", {"base": str(prefix), "platbase": str(prefix)}
        )
    )
    # mypyc was only a build tool: the prefix holds what runs
    assert (site / "caremesh" / "_native" / "build-manifest").is_file()
    assert not (site / "mypy").exists()
    assert not (site / "mypyc").exists()

    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": INS_SYSTEM, "value": "299017590000001"}],
        "name": [{"family": "Synthetic", "given": ["Test"]}],
        "birthDate": "1950-03-04",
    }
    (tmp_path / "in.ndjson").write_bytes(orjson.dumps(patient) + b"\n")
    (tmp_path / "key").write_bytes(os.urandom(32).hex().encode())
    run = _env(PYTHONPATH=str(site))
    engine = subprocess.run(
        [str(python), "-c", "import caremesh.pseudonym.engine as e; print(e.__file__)"],
        env=run,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert engine.stdout.strip().endswith(".so"), engine.stdout
    subprocess.run(
        [
            *(str(python), "-m", "caremesh.cli.main", "pseudonymise", "--config", "gdpr-research"),
            *("--key-file", "key", "--quiet", "in.ndjson", "out.ndjson"),
        ],
        env=run,
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    out = orjson.loads((tmp_path / "out.ndjson").read_bytes())
    assert out["resourceType"] == "Patient"
    assert "299017590000001" not in orjson.dumps(out).decode()
    assert "name" not in out
    assert out["birthDate"] == "1950"
