"""Fixtures shared by the unit tests."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Put the garbage collector back as it was (for tests that freeze start-up objects)."""
    gc.unfreeze()
    yield
    gc.unfreeze()
