"""The inbox's message catalogue: complete in both languages, and the language a request gets."""

from __future__ import annotations

import re

import pytest

from caremesh.connectors.inbox.i18n import MESSAGES, Lang, choose_lang, from_accept_language
from caremesh.connectors.inbox.pages import STATIC_DIR, render


def test_both_languages_have_the_same_texts_and_every_text_differs_where_it_should() -> None:
    assert set(MESSAGES["fr"]) == set(MESSAGES["en"])
    same = {k for k in MESSAGES["fr"] if MESSAGES["fr"][k] == MESSAGES["en"][k]}
    assert same <= {"product", "patient"}


def test_every_text_the_templates_and_the_script_use_is_in_the_catalogue() -> None:
    used: set[str] = set()
    for name in ("inbox.html", "login.html"):
        used |= set(re.findall(r"\{\{t\.([a-z_]+)\}\}", (STATIC_DIR / name).read_text()))
    script = (STATIC_DIR / "inbox.js").read_text()
    used |= set(re.findall(r'\bt\("([a-z_]+)"', script))
    used |= set(re.findall(r'"((?:announce|closed|error|withheld)_[a-z_]+)"', script))
    assert "sign_in" in used
    assert "acknowledge" in used
    assert "closed_ack" in used
    assert used <= set(MESSAGES["fr"])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("fr-FR,fr;q=0.9,en;q=0.8", "fr"),
        ("en-GB,en;q=0.9", "en"),
        ("de-DE, en;q=0.5, fr;q=0.4", "en"),
        ("fr;q=0.2, en;q=0.7", "en"),
        ("EN-us", "en"),
        ("de, it", None),
        ("en;q=0, fr;q=0.1", "fr"),
        ("en;q=abc, fr", "fr"),
    ],
)
def test_accept_language_picks_the_preferred_catalogue_language(
    header: str | None, expected: str | None
) -> None:
    assert from_accept_language(header) == expected


@pytest.mark.parametrize(
    ("query", "cookie", "header", "expected"),
    [
        (None, None, None, "fr"),
        (None, None, "en-GB", "en"),
        (None, "fr", "en-GB", "fr"),
        ("en", "fr", "fr-FR", "en"),
        ("xx", None, "en", "en"),
        (None, "xx", None, "fr"),
    ],
)
def test_the_switch_wins_over_the_cookie_which_wins_over_the_browser(
    query: str | None, cookie: str | None, header: str | None, expected: str
) -> None:
    assert choose_lang(query, cookie, header) == expected


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_a_rendered_page_has_its_lang_texts_and_no_placeholder_left(lang: Lang) -> None:
    page = render("inbox.html", lang, csrf="c", display_name="<A>", organisation="org-a")
    assert f'<html lang="{lang}">' in page
    assert "{{" not in page
    assert "&lt;A&gt;" in page
    assert MESSAGES[lang]["sign_out"] in page
