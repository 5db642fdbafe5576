"""Read HL7's official FHIR Consent examples through the real consent API and count the passes.

Fetches hl7.fhir.r4.examples@4.0.1 and hl7.fhir.r5.examples@5.0.0 with `npm pack` into a cache
outside git (`$CAREMESH_EXAMPLES_CACHE`, default ~/.cache/caremesh/fhir-examples), starts the
consent API against the real broker (`--kafka`, default 127.0.0.1:9092) with topics of its own,
posts every Consent example as a source system (one source per example, so examples naming
the same `Patient/f001` do not meet), asks GET /decision the questions the team wrote from each
example's narrative (tests/data/fhir-consent-examples.json) and prints the pass count per
release. An example passes when it is accepted as expected and every answer is as expected.

    .venv/bin/python scripts/consent-examples.py [--kafka HOST:PORT] [--verbose]

Nothing it downloads is committed; it prints element paths and codes, never patient data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from caremesh import topics
from caremesh.connectors.consent_api import create_app
from caremesh.kafka import admin as kafka_admin
from caremesh.kafka.io import AsyncProducer
from caremesh.metrics import Metrics
from caremesh.settings import Settings, SourceSettings
from caremesh.tables.consent_ledger import ConsentLedger

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.integration.consent.servers import serve  # noqa: E402  (a real uvicorn server)

PACKAGES = {"R4": "hl7.fhir.r4.examples@4.0.1", "R5": "hl7.fhir.r5.examples@5.0.0"}
EXPECTED = ROOT / "tests" / "data" / "fhir-consent-examples.json"
ADMIN_TOKEN = uuid.uuid4().hex


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "caremesh" / "fhir-examples"
    return Path(os.environ.get("CAREMESH_EXAMPLES_CACHE", default))


def consent_examples(release: str) -> dict[str, dict[str, Any]]:
    """The Consent examples of one release's npm package, by id (fetched once into the cache)."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    name, _, version = PACKAGES[release].partition("@")
    tgz = cache / f"{name}-{version}.tgz"
    if not tgz.exists():
        subprocess.run(["npm", "pack", PACKAGES[release]], cwd=cache, check=True)  # noqa: S603,S607
    out: dict[str, dict[str, Any]] = {}
    with tarfile.open(tgz) as archive:
        for member in archive.getmembers():
            base = member.name.rsplit("/", 1)[-1]
            if base.startswith("Consent-") and base.endswith(".json"):
                handle = archive.extractfile(member)
                if handle is not None:
                    data = json.loads(handle.read())
                    out[data["id"]] = data
    return out


def source_id(release: str, example_id: str) -> str:
    return f"{release.lower()}-{example_id}"


def settings_for(kafka: str, sources: list[str]) -> Settings:
    settings = Settings()
    settings.kafka.bootstrap_servers = kafka
    settings.kafka.topic_prefix = f"consent-examples-{uuid.uuid4().hex[:8]}."
    settings.consent_api.admins = {"examples-operator": SecretStr(ADMIN_TOKEN)}
    settings.sources = [SourceSettings(id=s, token=SecretStr(f"tok-{s}")) for s in sources]
    return settings


def patient_key(source: str, consent: dict[str, Any]) -> str:
    ref = (consent.get("patient") or consent.get("subject") or {}).get("reference", "")
    return f"{source}/{ref}"


def run(kafka: str, verbose: bool) -> int:
    expected: dict[str, dict[str, Any]] = json.loads(EXPECTED.read_text())
    examples = {release: consent_examples(release) for release in PACKAGES}
    sources = [source_id(r, e) for r, found in examples.items() for e in found]
    settings = settings_for(kafka, sources)
    kafka_admin.ensure_topics(
        kafka,
        topics.BASE_TOPICS,
        partitions=settings.kafka.partitions,
        replication_factor=1,
        prefix=settings.kafka.topic_prefix,
    )
    producer = AsyncProducer(kafka)
    ledger = ConsentLedger(kafka, settings.kafka.topic_prefix + topics.CONSENT_EVENTS)
    totals: dict[str, tuple[int, int]] = {}
    with serve(create_app(settings, producer, ledger, Metrics())) as url:
        for release, found in examples.items():
            passed = 0
            for example_id, consent in sorted(found.items()):
                want = expected[release].get(example_id)
                ok = want is not None and check(
                    url, release, example_id, consent, want, verbose=verbose
                )
                passed += ok
            totals[release] = (passed, len(found))
    producer.close(timeout=10)
    for release, (passed, total) in totals.items():
        print(f"{release}: {passed}/{total} official Consent examples read as their narrative says")
    return 0


def check(
    url: str,
    release: str,
    example_id: str,
    consent: dict[str, Any],
    want: dict[str, Any],
    *,
    verbose: bool,
) -> bool:
    source = source_id(release, example_id)
    headers = {
        "Authorization": f"Bearer tok-{source}",
        "Content-Type": f"application/fhir+json; fhirVersion={'4.0' if release == 'R4' else '5.0'}",
    }
    posted = httpx.post(url + "/Consent", content=json.dumps(consent), headers=headers, timeout=60)
    accepted = posted.status_code == 201
    lines = [f"{release} {example_id}: posted {posted.status_code}"]
    if not accepted:
        issues = posted.json().get("issue", [])
        lines.append("  refused: " + "; ".join(i.get("diagnostics", "") for i in issues))
    ok = accepted == want["accepted"]
    for question in want["questions"] if accepted else []:
        params = {"patient": patient_key(source, consent), "purpose": question["purpose"]}
        for key in ("actor", "resourceType", "securityLabel"):
            if key in question:
                params[key] = question[key]
        answer = httpx.get(
            url + "/decision",
            params=params,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=60,
        ).json()
        got = answer.get("decision") or answer.get("outcome")
        match = got == question["expect"]
        ok = ok and match
        shown = {k: v for k, v in question.items() if k != "expect"}
        lines.append(
            f"  {'ok  ' if match else 'MISS'} {shown} -> {got} ({answer.get('rule')}),"
            f" expected {question['expect']}"
        )
    if not accepted and want["accepted"]:
        ok = False
    if verbose or not ok:
        print("\n".join(lines))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--kafka", default="127.0.0.1:9092", help="bootstrap servers")
    parser.add_argument("--verbose", action="store_true", help="print every example")
    args = parser.parse_args()
    return run(args.kafka, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
