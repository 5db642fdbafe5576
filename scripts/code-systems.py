"""Regenerate src/caremesh/fhir/data/code_systems.json: the codes of complete HL7 code systems.

The codes (every concept, nested ones included) come from the FHIR R4 (4.0.1) specification's
CodeSystem resources, as shipped in the npm package hl7.fhir.r4.examples@4.0.1 (the R4 core
package is not on the npm registry; the examples package holds the same CodeSystem files), read
from `$CAREMESH_EXAMPLES_CACHE` (default ~/.cache/caremesh/fhir-examples) or fetched there with
`npm pack`. Only a code system whose `content` is `complete` is written: for it, a code that is
not listed is not a code of the system, as HAPI FHIR's validator says.

    .venv/bin/python scripts/code-systems.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PACKAGE = "hl7.fhir.r4.examples@4.0.1"
SYSTEMS = ("v3-orderableDrugForm",)
"""File names `CodeSystem-<name>.json` in the package: the systems caremesh checks."""

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "caremesh" / "fhir" / "data" / "code_systems.json"


def _package() -> Path:
    default = Path.home() / ".cache" / "caremesh" / "fhir-examples"
    cache = Path(os.environ.get("CAREMESH_EXAMPLES_CACHE", default))
    cache.mkdir(parents=True, exist_ok=True)
    name, _, version = PACKAGE.partition("@")
    tgz = cache / f"{name}-{version}.tgz"
    if not tgz.exists():
        npm = ["npm", "pack", PACKAGE]
        subprocess.run(npm, cwd=cache, check=True, capture_output=True)  # noqa: S603
    return tgz


def _codes(concepts: list[dict[str, Any]]) -> Iterator[str]:
    for concept in concepts:
        yield concept["code"]
        yield from _codes(concept.get("concept", []))


def main() -> int:
    systems: dict[str, dict[str, Any]] = {}
    with tarfile.open(_package()) as archive:
        for name in SYSTEMS:
            handle = archive.extractfile(f"package/CodeSystem-{name}.json")
            if handle is None:
                raise SystemExit(f"code-systems: CodeSystem-{name}.json missing from {PACKAGE}")
            resource = json.load(handle)
            if resource.get("content") != "complete" or resource.get("caseSensitive") is not True:
                raise SystemExit(f"code-systems: {name} is not complete and case-sensitive")
            codes = sorted(set(_codes(resource.get("concept", []))))
            systems[resource["url"]] = {"version": resource.get("version"), "codes": codes}
    document = {
        "generated_by": "scripts/code-systems.py",
        "source": f"npm {PACKAGE} (FHIR R4 4.0.1 CodeSystem resources)",
        "systems": systems,
    }
    OUT.write_text(json.dumps(document, indent=1) + "\n")
    print(f"code-systems: {sum(len(s['codes']) for s in systems.values())} codes in {OUT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
