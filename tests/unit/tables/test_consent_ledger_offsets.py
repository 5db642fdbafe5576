"""A consent decision waits for the ledger's end offsets; when the broker does not answer them
(a pause, a failover), that is "consent not ready" (retried by the stages), never a crash or a
dead letter (tests/reliability pauses a real broker for this)."""

from __future__ import annotations

import socket

import pytest
from aiokafka import TopicPartition

from caremesh.errors import ConsentNotReadyError
from caremesh.tables.consent_ledger import ConsentLedger


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unanswered_end_offsets_mean_consent_not_ready() -> None:
    ledger = ConsentLedger(f"127.0.0.1:{_closed_port()}", "consent.events.v1")
    try:
        with pytest.raises(ConsentNotReadyError, match="end offsets not known"):
            ledger._watermarks([TopicPartition("consent.events.v1", 0)])
    finally:
        if ledger._offsets is not None:
            ledger._offsets.close()
