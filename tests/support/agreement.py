"""Agreement between HAPI FHIR's validator and caremesh's ingest validation on a corpus.

The corpus is HL7's official R4 examples (npm package hl7.fhir.r4.examples@4.0.1, fetched with
`npm pack` into a cache outside git) and hostile variants of the examples of the types caremesh
carries: a bad required code, a duplicated key, an empty array, an empty object, an `urn:oid:`
identifier system that is no OID, a value of the wrong JSON type, an unknown element. Each
resource is judged twice: HAPI's `$validate` (any error or fatal issue = refused) and caremesh's
ingest (`process_ingest`: accepted or refused). Used by scripts/validation-agreement.py and
tests/integration/validation/test_validation_agreement.py; it reports element paths and counts,
never resource content.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from caremesh.fhir.ingest import process_ingest

PACKAGE = "hl7.fhir.r4.examples@4.0.1"
CARRIED = (
    "Patient",
    "Encounter",
    "Observation",
    "Condition",
    "CareTeam",
    "EpisodeOfCare",
    "MedicationRequest",
    "DiagnosticReport",
    "Consent",
    "AllergyIntolerance",
    "Procedure",
    "Immunization",
    "MedicationStatement",
    "ServiceRequest",
)
"""The resource types caremesh carries between care providers."""

CELLS = (
    "both accept",
    "both refuse",
    "HAPI refuses, caremesh accepts",
    "caremesh refuses, HAPI accepts",
)
DANGEROUS = CELLS[2]


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "caremesh" / "fhir-examples"
    return Path(os.environ.get("CAREMESH_EXAMPLES_CACHE", default))


def examples(types: tuple[str, ...] | None = None, *, fetch: bool = True) -> dict[str, bytes]:
    """The package's example resources (`Type-id.json` → bytes), fetched once into the cache
    (unless `fetch` is false: tests read what the test command fetched, and raise
    FileNotFoundError when it is not there)."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    name, _, version = PACKAGE.partition("@")
    tgz = cache / f"{name}-{version}.tgz"
    if not tgz.exists():
        if not fetch:
            raise FileNotFoundError(f"{tgz.name}: run scripts/fetch-fhir-examples.sh")
        subprocess.run(["npm", "pack", PACKAGE], cwd=cache, check=True, capture_output=True)
    out: dict[str, bytes] = {}
    with tarfile.open(tgz) as archive:
        for member in archive.getmembers():
            base = member.name.rsplit("/", 1)[-1]
            if not base.endswith(".json") or base.startswith(".") or "-" not in base:
                continue
            rtype = base.split("-", 1)[0]
            if types is not None and rtype not in types:
                continue
            handle = archive.extractfile(member)
            if handle is not None:
                out[base] = handle.read()
    return out


def _with(resource: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps(resource | changes).encode()


def _status_field(resource: dict[str, Any]) -> str | None:
    for name in ("status", "gender", "intent", "clinicalStatus"):
        if isinstance(resource.get(name), str):
            return name
    return None


HOSTILE: dict[str, Callable[[dict[str, Any]], bytes | None]] = {
    "bad-required-code": lambda r: (
        _with(r, **{field: "not-a-code"}) if (field := _status_field(r)) else None
    ),
    "duplicate-key": lambda r: (
        b'{"resourceType":"%s","id":"dup-a","id":"dup-b",' % r["resourceType"].encode()
        + json.dumps({k: v for k, v in r.items() if k not in ("resourceType", "id")}).encode()[1:]
    ),
    "empty-array": lambda r: _with(r, identifier=[]),
    "empty-object": lambda r: _with(r, meta={}),
    "empty-string": lambda r: _with(r, language=""),
    "bad-oid-system": lambda r: _with(
        r, identifier=[{"system": "urn:oid:not.an.oid", "value": "synthetic-1"}]
    ),
    "wrong-type-status": lambda r: _with(r, **{field: 7}) if (field := _status_field(r)) else None,
    "wrong-type-identifier": lambda r: _with(
        r, identifier={"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0"}
    ),
    "unknown-element": lambda r: _with(r, notAnElement="x"),
    "bad-id": lambda r: _with(r, id="not a valid id!"),
}


def hostile_variants(bases: dict[str, bytes]) -> dict[str, bytes]:
    """Every hostile variant of one example per carried type (`Type/variant` → bytes)."""
    out: dict[str, bytes] = {}
    first: dict[str, dict[str, Any]] = {}
    for _, body in sorted(bases.items()):
        resource = json.loads(body)
        first.setdefault(resource["resourceType"], resource)
    for rtype, resource in sorted(first.items()):
        for name, make in HOSTILE.items():
            body = make(resource)
            if body is not None:
                out[f"{rtype}/{name}"] = body
    return out


def hapi_errors(client: httpx.Client, base_url: str, body: bytes) -> list[str]:
    """HAPI's error and fatal issues for the raw JSON `body` (locations only)."""
    rtype = json.loads(body).get("resourceType", "Basic") if body.strip() else "Basic"
    response = client.post(
        f"{base_url}/{rtype}/$validate",
        content=body,
        headers={"Content-Type": "application/fhir+json"},
    )
    if response.status_code not in (200, 400, 422):
        response.raise_for_status()
    try:
        outcome = response.json()
    except ValueError:
        return ["?: unreadable answer"]
    out = []
    for issue in outcome.get("issue", []):
        if issue.get("severity") in ("error", "fatal"):
            where = (issue.get("expression") or issue.get("location") or ["?"])[0]
            out.append(str(where))
    return out


def caremesh_refuses(body: bytes) -> str | None:
    """caremesh's ingest decision: the rejection code, or None when accepted."""
    result = process_ingest(body, "agreement-src", "00000000-0000-4000-8000-000000000000", "R4", {})
    return None if result.rejection is None else result.rejection.code


@dataclass
class Verdict:
    name: str
    hapi: list[str]
    caremesh: str | None

    @property
    def cell(self) -> str:
        hapi_refuses, ours = bool(self.hapi), self.caremesh is not None
        if hapi_refuses:
            return CELLS[1] if ours else CELLS[2]
        return CELLS[3] if ours else CELLS[0]


def judge(client: httpx.Client, base_url: str, corpus: dict[str, bytes]) -> Iterator[Verdict]:
    for name, body in sorted(corpus.items()):
        yield Verdict(name, hapi_errors(client, base_url, body), caremesh_refuses(body))


def table(verdicts: list[Verdict]) -> Counter[str]:
    counts: Counter[str] = Counter(dict.fromkeys(CELLS, 0))
    counts.update(v.cell for v in verdicts)
    return counts
