"""Browser test fixtures: Debian's headless Chromium driven by Playwright, and the integration
fixtures (a private topic namespace, caremesh subprocesses).

Playwright's own browser downloads are never used: `scripts/ensure-browser.sh` installs
Debian's `chromium`, and Playwright launches it through `executable_path`. A missing browser
fails the test under CI=true and skips it (saying how to install it) elsewhere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import namespace, spawn

__all__ = ["browser", "namespace", "spawn"]

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def _missing(message: str) -> None:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message)
    pytest.skip(message)


def chromium_path() -> str | None:
    """Debian's Chromium binary, or None."""
    for path in (os.environ.get("CAREMESH_CHROMIUM"), *CHROMIUM_CANDIDATES):
        if path and os.access(path, os.X_OK):
            return path
    found = shutil.which("chromium")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (Playwright sync API) for one test module.

    Playwright's sync API runs an event loop in the main thread while it is open; closing it
    with the module keeps that loop from leaking into the asyncio tests that follow.
    """
    executable = chromium_path()
    if executable is None:
        _missing("Chromium is not installed: run `bash scripts/ensure-browser.sh` (as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the Python package `playwright` is not installed in the venv")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield chromium
        finally:
            chromium.close()
