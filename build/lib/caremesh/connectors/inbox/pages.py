"""The inbox's HTML pages: templates from the package's static folder, filled with escaped values.

Pages are plain HTML with `{{name}}` placeholders; every value is HTML-escaped. Scripts and
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

_PLACEHOLDER: Final = re.compile(r"\{\{([a-z_]+)\}\}")


@cache
def _template(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def render(name: str, **values: str) -> str:
    """A page from `static/<name>` with each `{{key}}` replaced by the escaped value."""
    template = _template(name)

    def fill(match: re.Match[str]) -> str:
        return html.escape(values.get(match.group(1), ""), quote=True)

    return _PLACEHOLDER.sub(fill, template)


def login_page(csrf: str, error: str = "") -> str:
    """The sign-in form."""
    return render("login.html", csrf=csrf, error=error)


def inbox_page(csrf: str, display_name: str, organisation: str) -> str:
    """The alert inbox of a signed-in coordinator."""
    return render("inbox.html", csrf=csrf, display_name=display_name, organisation=organisation)
