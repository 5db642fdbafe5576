"""Test support: a real HAPI FHIR server per test process (local/hapi), as a provider's endpoint.

`hapi_r4` and `hapi_r5` are session fixtures: each pytest process (each xdist worker) starts its
own server on a free port the first time a test asks for it and stops it at the end. Tests share
the server, so they use their own ids and identifiers (`Hapi.unique`). When Java, Maven or the
server is missing the tests are skipped on a developer machine and fail under CI=true.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from caremesh.errors import LocalHapiError
from caremesh.local.hapi import HapiProcess, LocalHapi, Release, down
from tests.support.kafka import free_port

FHIR_JSON = "application/fhir+json"


@dataclass
class Hapi:
    """A running HAPI FHIR server: its base URL and helpers to look at what it holds."""

    base_url: str
    release: Release
    server: HapiProcess
    client: httpx.Client = field(repr=False)

    def unique(self, prefix: str = "t") -> str:
        """A FHIR id (and identifier value) no other test uses on this shared server."""
        return f"{prefix}-{uuid.uuid4().hex[:16]}"

    def validate(self, resource: dict[str, Any]) -> list[str]:
        """HAPI's validator's errors (severity error or fatal) for `resource`, via $validate.

        Each is "<location>: <message>"; an empty list means HAPI would accept it."""
        response = self.client.post(
            f"{self.base_url}/{resource['resourceType']}/$validate",
            json=resource,
            headers={"Content-Type": FHIR_JSON},
        )
        assert response.status_code in (200, 422), response.text[:500]
        return errors(response.json())

    def read(self, type_: str, id_: str) -> dict[str, Any] | None:
        """The current version of Type/id, or None when the server does not hold it."""
        response = self.client.get(f"{self.base_url}/{type_}/{id_}")
        if response.status_code in (404, 410):
            return None
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def history(self, type_: str, id_: str) -> list[dict[str, Any]]:
        """Every version of Type/id, newest first."""
        response = self.client.get(f"{self.base_url}/{type_}/{id_}/_history")
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return entries(response.json())

    def search(self, type_: str, **params: str) -> list[dict[str, Any]]:
        """Resources of `type_` matching the parameters (`identifier="system|value"`,
        `subject="Patient/1"`, `patient="Patient/1"`, `_id=...`; a chain such as
        `patient.identifier` is passed as `**{"patient.identifier": "system|value"}`)."""
        response = self.client.get(f"{self.base_url}/{type_}", params=params)
        response.raise_for_status()
        return entries(response.json())

    def by_identifier(self, type_: str, system: str, value: str) -> list[dict[str, Any]]:
        return self.search(type_, identifier=f"{system}|{value}")

    def put(self, resource: dict[str, Any]) -> httpx.Response:
        """PUT [base]/Type/id (the resource's own id)."""
        return self.client.put(
            f"{self.base_url}/{resource['resourceType']}/{resource['id']}",
            json=resource,
            headers={"Content-Type": FHIR_JSON},
        )

    def post(self, resource: dict[str, Any], path: str | None = None) -> httpx.Response:
        """POST to [base]/Type (or [base]/`path`: "" for a transaction or batch Bundle)."""
        target = resource["resourceType"] if path is None else path
        return self.client.post(
            f"{self.base_url}/{target}".rstrip("/"),
            json=resource,
            headers={"Content-Type": FHIR_JSON},
        )


def errors(outcome: dict[str, Any]) -> list[str]:
    """The error and fatal issues of an OperationOutcome, as "<location>: <message>"."""
    out = []
    for issue in outcome.get("issue", []):
        if issue.get("severity") in ("error", "fatal"):
            where = (issue.get("expression") or issue.get("location") or ["?"])[0]
            out.append(f"{where}: {issue.get('diagnostics', issue.get('code', ''))}")
    return out


def entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if "resource" in e]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _start(release: Release, log_dir: Path) -> Iterator[Hapi]:
    try:
        server = LocalHapi().up(free_port(), release, log_path=log_dir / f"hapi-{release}.log")
    except LocalHapiError as exc:
        message = f"the local HAPI FHIR {release} server could not start: {exc}"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    with httpx.Client(timeout=60) as client:
        try:
            yield Hapi(server.base_url, release, server, client)
        finally:
            down(server)


@pytest.fixture(scope="session")
def hapi_r4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hapi]:
    """A HAPI FHIR R4 server of this test process (caremesh.local.hapi)."""
    yield from _start("R4", tmp_path_factory.mktemp("hapi-r4"))


@pytest.fixture(scope="session")
def hapi_r5(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hapi]:
    """A HAPI FHIR R5 server of this test process (caremesh.local.hapi)."""
    yield from _start("R5", tmp_path_factory.mktemp("hapi-r5"))
