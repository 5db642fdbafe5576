"""The inbox's HTML pages: templates from the package's static folder, filled with escaped values.

Pages are plain HTML with `{{name}}` placeholders for values and `{{t.key}}` placeholders for
the texts of the message catalogue (`i18n`) in the page's language; every value is
HTML-escaped. The page's script reads its own texts from the `inbox-messages` meta tag. Scripts and
styles come only from `/static/` (no CDN, no inline script), which the Content-Security-Policy
below enforces in the browser.
"""

from __future__ import annotations

import html
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Final

import orjson

from caremesh.connectors.inbox.i18n import LANGS, MESSAGES, Lang

STATIC_DIR: Final = Path(str(resources.files("caremesh.connectors.inbox") / "static"))

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
"""Headers of every page and API answer (static assets excepted)."""

_PLACEHOLDER: Final = re.compile(r"\{\{([a-z_]+|t\.[a-z_]+)\}\}")


@cache
def _template(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def render(name: str, lang: Lang, **values: str) -> str:
    """A page from `static/<name>` in `lang`: `{{key}}` is the escaped value, `{{t.key}}` the text.

    Besides the caller's values, `lang`, `messages` (the catalogue of `lang` as JSON) and
    `current_<lang>` (`true` for the page's language, else `false`, for `aria-current`) are set.
    """
    template = _template(name)
    texts = MESSAGES[lang]
    filled = {
        "lang": lang,
        "messages": orjson.dumps(texts).decode(),
        **{f"current_{each}": "true" if each == lang else "false" for each in LANGS},
        **values,
    }

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        value = texts[key[2:]] if key.startswith("t.") else filled.get(key, "")
        return html.escape(value, quote=True)

    return _PLACEHOLDER.sub(fill, template)


def login_page(lang: Lang, csrf: str, error: str = "") -> str:
    """The sign-in form; `error` is a catalogue key or empty."""
    return render("login.html", lang, csrf=csrf, error=MESSAGES[lang][error] if error else "")


def inbox_page(lang: Lang, csrf: str, display_name: str, organisation: str) -> str:
    """The alert inbox of a signed-in coordinator."""
    return render(
        "inbox.html", lang, csrf=csrf, display_name=display_name, organisation=organisation
    )
