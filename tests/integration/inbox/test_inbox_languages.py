"""The inbox pages in French (the default) and English: Accept-Language, the switch, `lang`."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest

from tests.integration.inbox.support import PASSWORDS, login, start_inbox
from tests.support.kafka import Namespace, Proc

pytestmark = pytest.mark.kafka


def _lang(html: str) -> str:
    match = re.search(r'<html lang="([a-z]+)">', html)
    assert match is not None
    return match.group(1)


def test_pages_follow_the_browser_then_the_switch_and_keep_the_choice(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    inbox = start_inbox(spawn, namespace)

    french = httpx.Client(base_url=inbox.url, headers={"Accept-Language": "fr-FR,fr;q=0.9"})
    page = french.get("/login").text
    assert _lang(page) == "fr"
    assert "Identifiant" in page
    assert "Se connecter" in page
    assert "Sign in" not in page
    assert "Username" not in page

    english = httpx.Client(base_url=inbox.url, headers={"Accept-Language": "en-GB,en;q=0.9"})
    page = english.get("/login").text
    assert _lang(page) == "en"
    assert "Username" in page
    assert "Sign in" in page
    assert "Se connecter" not in page

    # No preference at all: French, the territory's language.
    assert _lang(httpx.get(f"{inbox.url}/login").text) == "fr"

    # The switch wins over the browser and is remembered across sign-in.
    switched = english.get("/login", params={"lang": "fr"})
    assert _lang(switched.text) == "fr"
    assert english.cookies.get("caremesh_inbox_lang") == "fr"
    csrf = switched.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    refused = english.post("/login", data={"username": "alice", "password": "x", "csrf": csrf})
    assert refused.status_code == 401
    assert "Identifiant inconnu ou mot de passe erroné." in refused.text
    csrf = refused.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    form = {"username": "alice", "password": PASSWORDS["alice"], "csrf": csrf}
    assert english.post("/login", data=form).status_code == 303
    inbox_page = english.get("/").text
    assert _lang(inbox_page) == "fr"
    assert "Se déconnecter" in inbox_page
    assert "Tous les parcours" in inbox_page
    back = english.get("/", params={"lang": "en"}).text
    assert _lang(back) == "en"
    assert "Sign out" in back
    assert "All pathways" in back
    assert "Se déconnecter" not in back


def test_the_inbox_page_carries_the_script_texts_of_its_language(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    inbox = start_inbox(spawn, namespace)
    client, _ = login(inbox.url, "alice")
    french = client.get("/", headers={"Accept-Language": "fr"}).text
    english = client.get("/", headers={"Accept-Language": "en"}).text
    assert "Accuser réception" in french
    assert "fr-FR" in french
    assert "Acknowledge" in english
    assert "en-GB" in english
    assert "Accuser réception" not in english
