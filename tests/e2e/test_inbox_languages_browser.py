"""The inbox in a real browser in French and English: the alert list and card, the switch, dates.

Screenshots go to docs/screenshots/inbox-fr-list.png and inbox-en-list.png.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.inbox.support import (
    PASSWORDS,
    alert,
    care_team_resource,
    patient_resource,
    produce_alerts,
    produce_clinical,
    refuse_treat,
    start_inbox,
)
from tests.support.kafka import Namespace, Proc

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PATIENT = "2850675123456"
REFUSING = "1940475222333"
RAISED = int(datetime(2026, 3, 5, 9, 30, tzinfo=UTC).timestamp())

FRENCH = {
    "lang": "fr",
    "login": ("Identifiant", "Mot de passe", "Se connecter"),
    "card": ("Parcours", "Règle", "Émise", "Statut", "Ouverte", "Élevée", "Accuser réception"),
    "note": "Note (facultative)",
    "month": "mars",
    "closed": "Réception accusée par alice",
    "status": "Statut",
    "english_only": ("Acknowledge", "Raised", "Pathway"),
    "context": ("Nom", "Téléphone", "Équipe de soins", "Femme", " ans"),
    "withheld": "Le consentement du patient ne permet pas d'afficher ses informations.",
}
ENGLISH = {
    "lang": "en",
    "login": ("Username", "Password", "Sign in"),
    "card": ("Pathway", "Rule", "Raised", "Status", "Open", "High", "Acknowledge"),
    "note": "Note (optional)",
    "month": "Mar",
    "closed": "Acknowledged by alice",
    "status": "Status",
    "english_only": ("Accuser", "Émise", "Parcours"),
    "context": ("Name", "Phone", "Care team", "Female", " years"),
    "withheld": "Consent does not permit showing this patient's details.",
}


@pytest.mark.parametrize("texts", [FRENCH, ENGLISH], ids=["fr", "en"])
def test_the_alert_list_and_card_are_in_the_browsers_language(
    namespace: Namespace, spawn: Callable[..., Proc], browser: Any, texts: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    produce_clinical(
        namespace,
        PATIENT,
        [patient_resource(PATIENT, "Muller", "+33 3 88 11 22 33"), care_team_resource(PATIENT)],
    )
    produce_clinical(namespace, REFUSING, [patient_resource(REFUSING, "Schaeffer", "06 12")])
    refuse_treat(namespace, REFUSING, "org-a")
    a1, c1 = alert("org-a", PATIENT, severity="high", raised_at=RAISED)
    a2, c2 = alert("org-a", REFUSING, severity="low", raised_at=RAISED - 60)
    produce_alerts(namespace, [(PATIENT, c1), (REFUSING, c2)])
    inbox = start_inbox(spawn, namespace)
    locale = "fr-FR" if texts["lang"] == "fr" else "en-GB"
    context = browser.new_context(viewport={"width": 1200, "height": 760}, locale=locale)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{inbox.url}/")
    expect(page.locator("html")).to_have_attribute("lang", texts["lang"])
    username, password, sign_in = texts["login"]
    page.get_by_label(username).fill("alice")
    page.get_by_label(password).fill(PASSWORDS["alice"])
    page.get_by_role("button", name=sign_in).click()

    expect(page.locator("html")).to_have_attribute("lang", texts["lang"])
    card = page.locator(f'li[data-alert-id="{a1}"]')
    expect(card).to_be_visible()
    for text in texts["card"]:
        expect(card).to_contain_text(text)
    for text in texts["english_only"]:
        expect(card).not_to_contain_text(text)
    expect(card.locator("time")).to_contain_text(texts["month"])
    expect(card.get_by_label(texts["note"])).to_be_visible()
    expect(card).to_contain_text("Jeanne Muller")
    expect(card).to_contain_text("+33 3 88 11 22 33")
    for text in texts["context"]:
        expect(card.locator("section.context")).to_contain_text(text)
    withheld = page.locator(f'li[data-alert-id="{a2}"]')
    expect(withheld).to_contain_text(texts["withheld"])
    expect(withheld).not_to_contain_text("Schaeffer")
    assert "Schaeffer" not in page.content()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"inbox-{texts['lang']}-list.png"), full_page=True)

    card.get_by_role("button", name=texts["card"][-1]).click()
    page.get_by_label(texts["status"]).select_option("closed")
    expect(card).to_contain_text(texts["closed"])
    context.close()


def test_the_switch_changes_the_language_of_the_page(
    namespace: Namespace, spawn: Callable[..., Proc], browser: Any
) -> None:
    from playwright.sync_api import expect

    inbox = start_inbox(spawn, namespace)
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{inbox.url}/login")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.get_by_role("link", name="Français").click()
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    page.get_by_label("Identifiant").fill("alice")
    page.get_by_label("Mot de passe").fill(PASSWORDS["alice"])
    page.get_by_role("button", name="Se connecter").click()
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.get_by_role("button", name="Se déconnecter")).to_be_visible()
    page.get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    context.close()
