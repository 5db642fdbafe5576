"""Heart failure end to end: weight Observations posted over HTTP raise exactly one alert, which
the patient's coordinator sees arrive in a real browser and acknowledges; a coordinator of
another organisation sees nothing of it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from caremesh.pathways.alert import parse_action
from tests.integration.inbox.support import PASSWORDS, listed, login, start_inbox
from tests.support.kafka import Namespace, Proc, free_port, worker_ready

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
INS = "urn:oid:1.2.250.1.213.1.4.8"
PATIENT = "2510575444333"
TOKEN = "synthetic-hf-source-token"


def _weight(n: int, kg: float, when: datetime) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"hf-weight-{n}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"identifier": {"system": INS, "value": PATIENT}},
        "effectiveDateTime": when.isoformat(),
        "valueQuantity": {
            "value": kg,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    }


def test_weight_gain_posted_over_http_reaches_the_coordinator_in_the_browser(
    namespace: Namespace, spawn: Callable[..., Proc], browser: Any
) -> None:
    from playwright.sync_api import expect

    http_port, worker_port = free_port(), free_port()
    env = namespace.env(
        CAREMESH_SOURCES=json.dumps([{"id": "hosp-a", "token": TOKEN}]),
        CAREMESH_HTTP_INGEST__PORT=str(http_port),
        CAREMESH_WORKER__WEB_PORT=str(worker_port),
        CAREMESH_PATHWAYS__COORDINATORS=json.dumps({"heart-failure": "Organization/org-a"}),
    )
    spawn("ingest-api", ["ingest-api"], env, wait_http=f"http://127.0.0.1:{http_port}/health")
    worker = spawn("worker", ["worker", "--stage", "validate", "--stage", "pathways"], env)
    worker_ready(worker, worker_port)
    inbox = start_inbox(spawn, namespace)

    context = browser.new_context(viewport={"width": 1200, "height": 760}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{inbox.url}/login")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORDS["alice"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#connection")).to_have_text("live")
    items = page.locator("#alerts > li")
    expect(items).to_have_count(0)

    client = httpx.Client(
        base_url=f"http://127.0.0.1:{http_port}",
        timeout=30,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"},
    )
    now = datetime.now(UTC)
    diagnosis = {
        "resourceType": "Condition",
        "id": "hf-dx",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I50.0"}]},
        "subject": {"identifier": {"system": INS, "value": PATIENT}},
        "onsetDateTime": (now - timedelta(days=200)).isoformat(),
    }
    assert client.post("/fhir/Condition", content=orjson.dumps(diagnosis)).status_code == 202
    # 81.0 kg, then 82.0 (+1 kg: no alert), then 83.4 within 3 days (+2.4 kg: one alert), then
    # 83.6 (still the same open alert).
    readings = [(81.0, 60), (82.0, 40), (83.4, 20), (83.6, 10)]
    for n, (kg, hours_ago) in enumerate(readings):
        r = client.post(
            "/fhir/Observation",
            content=orjson.dumps(_weight(n, kg, now - timedelta(hours=hours_ago))),
        )
        assert r.status_code == 202, r.text

    # The alert appears in the page without a reload.
    expect(items).to_have_count(1, timeout=60_000)
    item = items.first
    expect(item).to_contain_text("heart-failure")
    expect(item).to_contain_text(PATIENT)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "inbox-heart-failure-alert.png"), full_page=True)

    alerts = namespace.consume_all("pathway.alerts.v1", settle=4)
    assert len({orjson.loads(m.value())["id"] for m in alerts}) == 1  # exactly one alert
    alert_id = orjson.loads(alerts[0].value())["id"]

    # Another organisation's coordinator sees nothing of it, in the API or the page.
    bob, _ = login(inbox.url, "bob")
    assert listed(bob) == []
    assert listed(bob, status="closed") == []
    assert PATIENT not in bob.get("/").text

    item.get_by_label("Note (optional)").fill("Diuretic adjusted by phone.")
    item.get_by_role("button", name="Acknowledge").click()
    expect(items).to_have_count(0)
    context.close()

    actions = namespace.consume("pathway.actions.v1", 1)
    assert len(actions) == 1
    assert actions[0].key() == PATIENT.encode()
    action = parse_action(actions[0].value() or b"")
    assert (action.action, action.alert_id) == ("ack", alert_id)
