"""The deployment files: scripts/check-deploy.sh passes, and its schemas catch real mistakes."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_deploy", ROOT / "scripts/check_deploy.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_deploy_script_passes() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/check-deploy.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _deployment() -> dict[str, Any]:
    docs = yaml.safe_load_all((ROOT / "deploy/k8s/deployments.yaml").read_text())
    return next(d for d in docs if d["metadata"]["name"] == "caremesh-worker")


def _set(doc: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    broken = copy.deepcopy(doc)
    node: Any = broken
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[int(last) if last.isdigit() else last] = value
    return broken


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.replicas", "three"),
        ("spec.template.spec.containers.0.imagePullPolcy", "Always"),  # typo of a real key
        ("spec.template.spec.containers.0.ports.0.containerPort", 70000),
        ("metadata.name", "Caremesh_Worker"),
        ("spec.template.spec.containers.0.env.1.valueFrom", {"secretKeyRef": {"name": "x"}}),
    ],
)
def test_deployment_schema_catches_mistakes(path: str, value: object) -> None:
    checker = _checker()
    validator = checker._validator("k8s-deployment.json")
    assert checker._errors(validator, _deployment(), "ok") == []
    assert checker._errors(validator, _set(_deployment(), path, value), "broken")


def test_compose_schema_catches_a_misspelt_service_key() -> None:
    checker = _checker()
    validator = checker._validator("compose.json")
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert checker._errors(validator, doc, "ok") == []
    doc["services"]["worker"]["enviroment"] = {}
    assert checker._errors(validator, doc, "broken")


def test_every_process_of_the_deployment_guide_has_a_deployment() -> None:
    names = {
        d["metadata"]["name"]
        for d in yaml.safe_load_all((ROOT / "deploy/k8s/deployments.yaml").read_text())
    }
    for process in ("worker", "ingest-api", "mllp", "consent-api", "delivery", "inbox"):
        assert f"caremesh-{process}" in names
