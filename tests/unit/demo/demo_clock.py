"""The simulated clock the demo tests generate their events with."""

from __future__ import annotations

from datetime import UTC, datetime

START = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
SPEED = 240.0
