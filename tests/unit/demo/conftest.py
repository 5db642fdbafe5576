"""Fixtures of the demo tests: one synthetic territory of 300 patients and its events."""

from __future__ import annotations

import pytest

from caremesh.demo.scenario import Event, territory_events
from caremesh.demo.territory import Territory
from tests.unit.demo.demo_clock import SPEED, START


@pytest.fixture(scope="session")
def territory() -> Territory:
    """A territory of 300 patients (seed 11)."""
    return Territory.generate(11, patients=300)


@pytest.fixture(scope="session")
def events(territory: Territory) -> list[Event]:
    """Every event of the 300-patient territory."""
    return list(territory_events(territory, START, SPEED))
