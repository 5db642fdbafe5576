"""Faust is no part of the product (docs/decisions/0001-stream-runtime.md): no runtime
requirement of the caremesh distribution names faust-streaming (or the packages it brings,
mode and venusian), and no module under src/ imports them. Only the `bench` extra has it."""

from __future__ import annotations

import ast
import re
from importlib.metadata import requires
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "caremesh"
BENCH_ONLY = {"faust-streaming", "faust", "mode-streaming", "mode", "venusian"}
BENCH_ONLY_MODULES = {"faust", "mode", "venusian"}


def _name(requirement: str) -> str:
    """The normalised project name of a requirement string (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _runtime_requirements() -> list[str]:
    """caremesh's requirements installed without any extra."""
    found = requires("caremesh") or []
    return [r for r in found if ";" not in r or "extra" not in r.split(";", 1)[1]]


def test_no_runtime_requirement_is_faust() -> None:
    runtime = {_name(r) for r in _runtime_requirements()}
    assert "confluent-kafka" in runtime  # the metadata read is caremesh's own
    assert not runtime & BENCH_ONLY


def test_faust_is_in_the_bench_extra() -> None:
    bench = [r for r in requires("caremesh") or [] if re.search(r"extra\s*==\s*.bench.", r)]
    assert "faust-streaming" in {_name(r) for r in bench}


def _imported(path: Path) -> set[str]:
    """Top-level names of the modules `path` imports (absolute imports only)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_product_module_imports_faust() -> None:
    modules = sorted(SRC.rglob("*.py"))
    assert len(modules) > 50
    offenders = [str(p.relative_to(SRC)) for p in modules if _imported(p) & BENCH_ONLY_MODULES]
    assert offenders == []


def test_the_import_check_sees_faust() -> None:
    bench = SRC.parents[1] / "bench" / "faust_app.py"
    assert "faust" in _imported(bench)
