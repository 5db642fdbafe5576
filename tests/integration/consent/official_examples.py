"""HL7's official FHIR Consent examples read through the real consent API: fetch, post, ask.

Shared by scripts/consent-examples.py (prints the pass count) and
tests/integration/consent/test_official_consent_examples.py (asserts it). The examples come
from the npm packages hl7.fhir.r4.examples@4.0.1 and hl7.fhir.r5.examples@5.0.0, fetched with
`npm pack` once into a cache outside git (`$CAREMESH_EXAMPLES_CACHE`, default
~/.cache/caremesh/fhir-examples) and never committed. The expected decisions are the team's,
written from each example's narrative (`text.div`): tests/data/fhir-consent-examples.json, where
an example whose structure the engine reads otherwise than its narrative carries `exception`
with the reason. Every Consent is posted by a source of its own (`<release>-<id>`), so examples
naming the same `Patient/f001` do not meet; the decision is asked for the key that source's
records for that patient get. Results carry element paths and codes, never patient data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from caremesh.settings import Settings, SourceSettings
from tests.support.settings import evolve

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = {"R4": "hl7.fhir.r4.examples@4.0.1", "R5": "hl7.fhir.r5.examples@5.0.0"}
EXPECTED = ROOT / "tests" / "data" / "fhir-consent-examples.json"
QUESTION_PARAMS = (
    "actor",
    "custodian",
    "resourceType",
    "securityLabel",
    "resource",
    "references",
    "dataDate",
)
"""The /decision parameters a question may set besides patient and purpose."""


class ExamplesUnavailableError(RuntimeError):
    """The npm package of a release could not be fetched or read (no network, no npm...)."""


def cache_dir() -> Path:
    """Where the npm tarballs are kept (outside git)."""
    default = Path.home() / ".cache" / "caremesh" / "fhir-examples"
    return Path(os.environ.get("CAREMESH_EXAMPLES_CACHE", default))


def _tarball(release: str, *, fetch: bool) -> Path:
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    name, _, version = PACKAGES[release].partition("@")
    tgz = cache / f"{name}-{version}.tgz"
    if tgz.exists():
        return tgz
    if not fetch:
        raise ExamplesUnavailableError(
            f"{tgz.name} is not in {cache}; scripts/fetch-fhir-examples.sh fetches it"
        )
    npm = shutil.which("npm")
    if npm is None:
        raise ExamplesUnavailableError(f"npm not found; cannot fetch {PACKAGES[release]}")
    done = subprocess.run(
        [npm, "pack", PACKAGES[release]], cwd=cache, capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not tgz.exists():
        raise ExamplesUnavailableError(
            f"npm pack {PACKAGES[release]} failed (exit {done.returncode})"
        )
    return tgz


def consent_examples(release: str, *, fetch: bool = True) -> dict[str, dict[str, Any]]:
    """The Consent examples of one release's npm package, by id (fetched once into the cache
    unless `fetch` is false: tests read the cache the test command filled)."""
    tgz = _tarball(release, fetch=fetch)
    out: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(tgz) as archive:
            for member in archive.getmembers():
                base = member.name.rsplit("/", 1)[-1]
                if base.startswith("Consent-") and base.endswith(".json"):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        data = json.loads(handle.read())
                        out[data["id"]] = data
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise ExamplesUnavailableError(f"cannot read {tgz.name}: {type(exc).__name__}") from None
    if not out:
        raise ExamplesUnavailableError(f"{tgz.name} holds no Consent example")
    return out


def expected() -> dict[str, dict[str, dict[str, Any]]]:
    """The team's expectations, by release and example id."""
    data: dict[str, Any] = json.loads(EXPECTED.read_text())
    return {release: data[release] for release in PACKAGES}


def source_id(release: str, example_id: str) -> str:
    """The source that posts one example (one per example)."""
    return f"{release.lower()}-{example_id}"


def source_token(source: str) -> str:
    """The synthetic bearer token of a source."""
    return f"tok-{source}"


def settings_for(kafka: str, prefix: str, sources: list[str], admin_token: str) -> Settings:
    """Consent API settings: one source per example, one operator, topics under `prefix`."""
    settings = Settings()
    settings = evolve(
        settings,
        kafka__bootstrap_servers=kafka,
        kafka__topic_prefix=prefix,
        consent_api__admins={"examples-operator": SecretStr(admin_token)},
        sources=[SourceSettings(id=s, token=SecretStr(source_token(s))) for s in sources],
    )
    return settings


def patient_key(source: str, consent: dict[str, Any]) -> str:
    """The key the source's records for the Consent's patient get (`<source>/Patient/<id>`)."""
    ref = (consent.get("patient") or consent.get("subject") or {}).get("reference", "")
    return f"{source}/{ref}"


@dataclass
class Answer:
    """One question, what /decision answered, and whether that is what the narrative says."""

    question: dict[str, Any]
    got: str | None
    rule: str | None

    @property
    def ok(self) -> bool:
        return self.got == self.question["expect"]


@dataclass
class Result:
    """One example: whether it was accepted as expected and every answer was expected."""

    release: str
    example_id: str
    status: int
    want_accepted: bool
    refused: list[str] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    known: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 201

    @property
    def ok(self) -> bool:
        return self.accepted == self.want_accepted and all(a.ok for a in self.answers)

    def lines(self) -> list[str]:
        """A readable report (element paths and codes only)."""
        out = [f"{self.release} {self.example_id}: posted {self.status}"]
        if self.refused:
            out.append("  refused: " + "; ".join(self.refused))
        for a in self.answers:
            shown = {k: v for k, v in a.question.items() if k not in ("expect", "why")}
            out.append(
                f"  {'ok  ' if a.ok else 'MISS'} {shown} -> {a.got} ({a.rule}),"
                f" expected {a.question['expect']}"
            )
        if self.known:
            out.append(f"  known exception: {self.known}")
        return out


def check(
    url: str,
    release: str,
    example_id: str,
    consent: dict[str, Any],
    want: dict[str, Any],
    admin: str,
) -> Result:
    """Post one example as its source, then ask /decision each question of `want`."""
    source = source_id(release, example_id)
    headers = {
        "Authorization": f"Bearer {source_token(source)}",
        "Content-Type": f"application/fhir+json; fhirVersion={'4.0' if release == 'R4' else '5.0'}",
    }
    posted = httpx.post(url + "/Consent", content=json.dumps(consent), headers=headers, timeout=60)
    result = Result(
        release, example_id, posted.status_code, bool(want["accepted"]), known=want.get("exception")
    )
    if not result.accepted:
        issues = posted.json().get("issue", [])
        result.refused = [str(i.get("diagnostics", "")) for i in issues]
        return result
    for question in want["questions"]:
        params = {"patient": patient_key(source, consent), "purpose": question["purpose"]}
        params.update({k: str(question[k]) for k in QUESTION_PARAMS if k in question})
        answer = httpx.get(
            url + "/decision",
            params=params,
            headers={"Authorization": f"Bearer {admin}"},
            timeout=60,
        ).json()
        result.answers.append(Answer(question, answer.get("outcome"), answer.get("rule")))
    return result


def check_all(
    url: str,
    examples: dict[str, dict[str, dict[str, Any]]],
    wants: dict[str, dict[str, dict[str, Any]]],
    admin: str,
) -> list[Result]:
    """Every example of every release, in id order; one without an expectation fails."""
    results: list[Result] = []
    for release, found in examples.items():
        for example_id, consent in sorted(found.items()):
            want = wants[release].get(example_id)
            if want is None:
                results.append(Result(release, example_id, 0, True, ["no expectation written"]))
                continue
            results.append(check(url, release, example_id, consent, want, admin))
    return results
