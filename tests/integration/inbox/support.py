"""Inbox test support: synthetic alerts, coordinators, a running inbox and a signed-in client."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from caremesh import envelope
from caremesh.connectors.inbox.auth import hash_password
from caremesh.consent.model import ActorRef
from caremesh.envelope import Envelope, PatientKey
from caremesh.pathways.alert import build_communication
from caremesh.pathways.state import AlertCandidate
from tests.support.kafka import Namespace, Proc, free_port
from tests.unit.consent.consent_builders import provision, r4_consent

SECRET = "inbox-test-session-secret-0123456789abcdef"
PASSWORDS = {"alice": "alice-pass-1", "bob": "bob-pass-2"}
COORDINATORS = [
    # Cheap scrypt cost in tests; production hashes come from `caremesh inbox hash-password`.
    {
        "username": "alice",
        "password_hash": hash_password(PASSWORDS["alice"], log2_n=10),
        "organisation": "org-a",
        "display_name": "Alice Martin (coordinator)",
    },
    {
        "username": "bob",
        "password_hash": hash_password(PASSWORDS["bob"], log2_n=10),
        "organisation": "org-b",
        "display_name": "Bob Durand (coordinator)",
    },
]


def alert(
    org: str,
    patient: str,
    *,
    pathway: str = "heart-failure",
    rule: str = "weight-gain-3d",
    severity: str = "high",
    title: str = "Weight gain over 2 kg in 3 days",
    raised_at: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """(alert id, Communication) of a synthetic alert addressed to `Organization/<org>`."""
    alert_id = str(uuid.uuid4())
    candidate = AlertCandidate(
        alert_id=alert_id,
        key=f"{rule}|Condition/c1",
        sequence=0,
        patient_key=PatientKey(patient),
        pathway_id=pathway,
        pathway_version="1.0.0",
        coordinator=f"Organization/{org}",
        rule_id=rule,
        kind="threshold",
        severity=severity,
        title=title,
        text="Review diuretics and call the patient.",
        episode="Condition/c1",
        about=("Observation/o1",),
        occurred_at=raised_at or int(datetime.now(UTC).timestamp()),
        raised_at=raised_at or int(datetime.now(UTC).timestamp()),
    )
    return alert_id, build_communication(candidate)


def produce_alerts(ns: Namespace, alerts: list[tuple[str, dict[str, Any]]]) -> None:
    """Write Communications to the namespace's pathway.alerts.v1, keyed by the patient key."""
    records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
    for patient, communication in alerts:
        env = Envelope(
            communication["id"],
            "urn:caremesh:stage:pathways",
            envelope.fhir_event_type("Communication"),
        )
        headers = [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]
        records.append((patient.encode(), orjson.dumps(communication), headers))
    ns.produce("pathway.alerts.v1", records)


INS = "urn:oid:1.2.250.1.213.1.4.8"


def patient_resource(key: str, family: str, phone: str) -> dict[str, Any]:
    """A synthetic FHIR R4 Patient identified by its INS `key`."""
    return {
        "resourceType": "Patient",
        "id": f"p-{key}",
        "identifier": [{"system": INS, "value": key}],
        "name": [{"use": "official", "family": family, "given": ["Jeanne"]}],
        "gender": "female",
        "birthDate": "1948-03-06",
        "telecom": [{"system": "phone", "value": phone}],
    }


def care_team_resource(key: str) -> dict[str, Any]:
    """A CareTeam of org-a and org-b for the patient `key`."""
    return {
        "resourceType": "CareTeam",
        "id": f"ct-{key}",
        "subject": {"identifier": {"system": INS, "value": key}},
        "participant": [
            {"member": {"reference": "Organization/org-a"}},
            {"member": {"reference": "Organization/org-b"}},
        ],
    }


def produce_clinical(ns: Namespace, key: str, resources: list[dict[str, Any]]) -> None:
    """Write resources of one patient to the namespace's clinical.fhir.v1, keyed by `key`."""
    records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
    for resource in resources:
        env = Envelope(
            f"{resource['id']}-msg",
            "urn:caremesh:source:hosp-a",
            envelope.fhir_event_type(resource["resourceType"]),
        )
        headers = [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]
        records.append((key.encode(), orjson.dumps(resource), headers))
    ns.produce("clinical.fhir.v1", records)


def refuse_treat(ns: Namespace, key: str, org: str) -> None:
    """Write a Consent of patient `key` that denies TREAT to `Organization/<org>`."""
    refusal = r4_consent(
        f"consent-refuse-{org}",
        provision(
            "permit",
            sub=[
                provision(
                    "deny", actors=[ActorRef(reference=f"Organization/{org}")], purposes=["TREAT"]
                )
            ],
        ),
    )
    refusal["patient"] = {"identifier": {"system": INS, "value": key}}
    ns.produce("consent.events.v1", [(key.encode(), orjson.dumps(refusal), [])])


@dataclass
class Inbox:
    """A running `caremesh inbox` process."""

    url: str
    proc: Proc
    env: dict[str, str] = field(default_factory=dict)


def start_inbox(spawn: Callable[..., Proc], ns: Namespace, keepalive: float = 15.0) -> Inbox:
    """Start the inbox in the namespace and wait until it has read the topics (/health 200)."""
    port = free_port()
    env = ns.env(
        CAREMESH_INBOX__PORT=str(port),
        CAREMESH_INBOX__SESSION_SECRET=SECRET,
        CAREMESH_INBOX__COORDINATORS=json.dumps(COORDINATORS),
        CAREMESH_INBOX__KEEPALIVE_SECONDS=str(keepalive),
    )
    url = f"http://127.0.0.1:{port}"
    proc = spawn("inbox", ["inbox"], env, wait_http=f"{url}/health")
    return Inbox(url, proc, env)


def login(url: str, username: str, password: str | None = None) -> tuple[httpx.Client, str]:
    """A client signed in as `username`, and the page's CSRF token for API POSTs."""
    client = httpx.Client(base_url=url, timeout=15)
    form = client.get("/login")
    assert form.status_code == 200
    csrf = _field(form.text, r'name="csrf" value="([^"]+)"')
    answer = client.post(
        "/login",
        data={"username": username, "password": password or PASSWORDS[username], "csrf": csrf},
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    return client, _field(page.text, r'<meta name="csrf-token" content="([^"]+)">')


def _field(text: str, pattern: str) -> str:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern} not found in the page"
    return match.group(1)


def post_action(
    client: httpx.Client, csrf: str, alert_id: str, action: str, note: str | None
) -> httpx.Response:
    """POST /api/alerts/{id}/{action} as the page does."""
    return client.post(
        f"/api/alerts/{alert_id}/{action}",
        json={"note": note},
        headers={"X-CSRF-Token": csrf},
    )


def listed(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    """The alerts GET /api/alerts returns."""
    answer = client.get("/api/alerts", params=params)
    assert answer.status_code == 200, answer.text
    alerts: list[dict[str, Any]] = answer.json()["alerts"]
    return alerts


def eventually(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.2) -> Any:
    """The first truthy result of `check()`, polling until `timeout` seconds (then fail)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
