"""Logging set up once by the CLI: one line per event, never a payload.

Library modules log with `logging.getLogger(__name__)` and lazy `%` arguments that are
coordinates and counts only. As a second line of defence, third-party loggers known to print
record contents at DEBUG are held at WARNING.
"""

from __future__ import annotations

import logging
import sys

_HANDLER_NAME = "caremesh"
_NOISY = ("aiokafka", "kafka", "uvicorn.access", "httpx", "httpcore")


def configure_logging(level: str = "INFO") -> None:
    """Install one stderr handler on the root logger (idempotent)."""
    root = logging.getLogger()
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    root.setLevel(numeric)
    if not any(h.get_name() == _HANDLER_NAME for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.set_name(_HANDLER_NAME)
        root.addHandler(handler)
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
