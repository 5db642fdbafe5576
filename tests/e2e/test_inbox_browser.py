"""A coordinator in a real browser: sign in, watch a new alert arrive, filter, acknowledge.

Screenshots of each step go to docs/screenshots/inbox-*.png.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from caremesh.pathways.alert import parse_action
from tests.integration.inbox.support import PASSWORDS, alert, produce_alerts, start_inbox
from tests.support.kafka import Namespace, Proc

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PATIENT_1 = "2850675123456"
PATIENT_2 = "hosp-a/Patient/p-17"
PATIENT_3 = "1940475222333"
PATIENT_B = "1720133987654"


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"inbox-{name}.png"), full_page=True)


def test_coordinator_signs_in_sees_live_alerts_filters_and_acknowledges(
    namespace: Namespace, spawn: Callable[..., Proc], browser: Any
) -> None:
    from playwright.sync_api import expect

    a1, c1 = alert("org-a", PATIENT_1, severity="high")
    a2, c2 = alert(
        "org-a",
        PATIENT_2,
        pathway="copd",
        rule="low-spo2-repeated",
        severity="medium",
        title="SpO2 under 90% twice within 24 h",
    )
    b1, cb = alert("org-b", PATIENT_B, severity="critical")
    produce_alerts(namespace, [(PATIENT_1, c1), (PATIENT_2, c2), (PATIENT_B, cb)])
    inbox = start_inbox(spawn, namespace)

    context = browser.new_context(viewport={"width": 1200, "height": 860}, locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{inbox.url}/")
    expect(page).to_have_url(f"{inbox.url}/login")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORDS["alice"])
    _shot(page, "login")
    page.get_by_role("button", name="Sign in").click()

    items = page.locator("#alerts > li")
    expect(page.locator("#connection")).to_have_text("live")
    expect(items).to_have_count(2)
    expect(page.locator(f'li[data-alert-id="{b1}"]')).to_have_count(0)
    expect(page.locator(f'li[data-alert-id="{a1}"]')).to_contain_text(PATIENT_1)
    expect(page.locator(f'li[data-alert-id="{a2}"]')).to_contain_text("copd")
    _shot(page, "list")

    # A new alert appears without reloading the page.
    a3, c3 = alert(
        "org-a",
        PATIENT_3,
        pathway="type-2-diabetes",
        rule="hypoglycaemia",
        severity="critical",
        title="Hypoglycaemia recorded",
    )
    produce_alerts(namespace, [(PATIENT_3, c3)])
    new = page.locator(f'li[data-alert-id="{a3}"]')
    expect(new).to_be_visible(timeout=10_000)
    expect(items).to_have_count(3)
    expect(page.get_by_role("status")).to_contain_text("Hypoglycaemia recorded")
    _shot(page, "live")

    # Filter by severity.
    page.get_by_label("Severity").select_option("critical")
    expect(items).to_have_count(1)
    expect(new).to_contain_text("Hypoglycaemia recorded")
    _shot(page, "filtered")

    # Acknowledge with a note: it leaves the open list and shows under Closed.
    new.get_by_label("Note (optional)").fill("Called the patient; GP sees her today.")
    new.get_by_role("button", name="Acknowledge").click()
    expect(items).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    page.get_by_label("Status").select_option("closed")
    expect(items).to_have_count(1)
    expect(new).to_have_attribute("data-status", "closed")
    expect(new).to_contain_text("Acknowledged by alice")
    expect(new).to_contain_text("Called the patient; GP sees her today.")
    page.get_by_label("Severity").select_option("")
    expect(items).to_have_count(1)
    _shot(page, "closed")
    context.close()

    records = namespace.consume("pathway.actions.v1", 1)
    assert len(records) == 1
    assert records[0].key() == PATIENT_3.encode()
    action = parse_action(records[0].value() or b"")
    assert (action.action, action.alert_id, action.note) == (
        "ack",
        a3,
        "Called the patient; GP sees her today.",
    )
